//! `infra completions <shell>` and `infra man [--out-dir DIR]`: generated from the same clap definition
//! that parses the command line, so they cannot drift from it.

use std::path::PathBuf;

use super::{FAILED, OK};
use crate::render;

#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// Write `infra.1` and one page per subcommand (`infra-run.1`, `infra-runs-logs.1`, …) into this
    /// directory instead of printing `infra.1`.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
}

pub fn completions(args: CompletionsArgs) -> u8 {
    let mut cmd = super::command();
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "infra", &mut buf);
    render::out(&String::from_utf8_lossy(&buf));
    OK
}

pub fn man(args: ManArgs) -> u8 {
    let cmd = super::command();
    match args.out_dir {
        None => {
            let mut buf = Vec::new();
            match clap_mangen::Man::new(cmd).render(&mut buf) {
                Ok(()) => {
                    render::out(&String::from_utf8_lossy(&buf));
                    OK
                }
                Err(e) => {
                    render::err(&format!("error: cannot render the manual: {e}\n"));
                    FAILED
                }
            }
        }
        Some(dir) => {
            let written =
                std::fs::create_dir_all(&dir).and_then(|()| clap_mangen::generate_to(cmd, &dir));
            match written {
                Ok(()) => {
                    render::note(&format!(
                        "wrote the manual pages into `{}`; read one with `man -l {}/infra.1`, or add the \
                         directory to `MANPATH`'s `man1` folder\n",
                        dir.display(),
                        dir.display()
                    ));
                    OK
                }
                Err(e) => {
                    render::err(&format!(
                        "error: cannot write the manual pages into `{}`: {e}; choose a directory you can \
                         write with `--out-dir`\n",
                        dir.display()
                    ));
                    FAILED
                }
            }
        }
    }
}
