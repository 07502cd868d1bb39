//! The only place that writes to stdout and stderr: human text and JSON, with the process's output
//! settings (`--color`, `-q`, `-v`) decided once at start.

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;

use dsl::Diagnostic;
use dsl::diagnostic::{RenderOptions, render_all};

/// `--color`: when to colour the output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    // (no doc comments here: `--help` then lists the values on one line)
    #[default]
    Auto,
    Always,
    Never,
}

/// How much goes to stderr beside the results.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    /// `-q`: errors only (no progress, no hints).
    Quiet,
    #[default]
    Normal,
    /// `-v`: more detail (run ids and evidence at start, longer output tails).
    Verbose,
}

/// The output settings of this process.
#[derive(Clone, Copy, Debug, Default)]
pub struct Settings {
    pub color_out: bool,
    pub color_err: bool,
    pub verbosity: Verbosity,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

/// Decides the settings from the flags, the environment and which streams are terminals (once; later
/// calls are ignored).
pub fn init(color: ColorChoice, verbosity: Verbosity) {
    let env = |k: &str| std::env::var(k).ok();
    let _ = SETTINGS.set(Settings {
        color_out: use_color(color, std::io::stdout().is_terminal(), &env),
        color_err: use_color(color, std::io::stderr().is_terminal(), &env),
        verbosity,
    });
}

fn settings() -> Settings {
    SETTINGS.get().copied().unwrap_or_default()
}

/// Whether to colour a stream: an explicit `always`/`never` wins; in `auto`, a non-empty `NO_COLOR`
/// turns colour off, then a `CLICOLOR_FORCE` other than `0` turns it on, else a terminal has colour.
pub fn use_color(
    choice: ColorChoice,
    terminal: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            let set = |k: &str| env(k).is_some_and(|v| !v.is_empty());
            if set("NO_COLOR") {
                false
            } else if set("CLICOLOR_FORCE") && env("CLICOLOR_FORCE").as_deref() != Some("0") {
                true
            } else {
                terminal && env("TERM").as_deref() != Some("dumb")
            }
        }
    }
}

pub fn quiet() -> bool {
    settings().verbosity == Verbosity::Quiet
}

pub fn verbose() -> bool {
    settings().verbosity == Verbosity::Verbose
}

/// Which stream a painted text goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Out,
    Err,
}

/// A colour of a word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Paint {
    Green,
    Red,
    Yellow,
    Bold,
}

/// `text` in a colour, when that stream is coloured.
pub fn paint(text: &str, paint: Paint, stream: Stream) -> String {
    let s = settings();
    let on = match stream {
        Stream::Out => s.color_out,
        Stream::Err => s.color_err,
    };
    if !on {
        return text.to_owned();
    }
    let code = match paint {
        Paint::Green => "32",
        Paint::Red => "1;31",
        Paint::Yellow => "33",
        Paint::Bold => "1",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// A step or run status, lowercase (`Status::as_str`), coloured by how it went.
pub fn status(s: engine::record::evidence::Status, stream: Stream) -> String {
    use engine::record::evidence::Status;
    let p = match s {
        Status::Succeeded => Paint::Green,
        Status::Skipped | Status::Cancelled => Paint::Yellow,
        Status::Failed | Status::TimedOut | Status::Refused => Paint::Red,
    };
    paint(s.as_str(), p, stream)
}

/// Writes text to stdout (a closed pipe is not an error worth a panic).
pub fn out(text: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(text.as_bytes());
    let _ = o.flush();
}

/// Writes text to stderr.
pub fn err(text: &str) {
    let mut e = std::io::stderr().lock();
    let _ = e.write_all(text.as_bytes());
}

/// Writes a hint or progress line to stderr, unless `-q`.
pub fn note(text: &str) {
    if !quiet() {
        err(text);
    }
}

/// Pretty JSON on stdout, with a final newline.
pub fn json(v: &serde_json::Value) {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    out(&s);
}

/// Diagnostics rustc-style on stderr (coloured as `--color` decides).
pub fn diagnostics(diags: &[Diagnostic]) {
    if diags.is_empty() {
        return;
    }
    let color = settings().color_err;
    err(&render_all(diags, RenderOptions { color }));
}

/// Diagnostics as a JSON array.
pub fn diagnostics_json(diags: &[Diagnostic]) -> serde_json::Value {
    serde_json::Value::Array(diags.iter().map(Diagnostic::to_json).collect())
}

/// The width of the terminal stdout is, when it is one (`COLUMNS` wins when set; 80 when the terminal
/// does not say).
pub fn stdout_width() -> Option<usize> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    if let Some(n) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        return Some(n);
    }
    Some(terminal_size::terminal_size_of(std::io::stdout()).map_or(80, |(w, _)| usize::from(w.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn color_follows_the_flag_then_no_color_then_clicolor_force_then_the_terminal() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let none = env(&[]);
        assert!(use_color(ColorChoice::Auto, true, &none));
        assert!(!use_color(ColorChoice::Auto, false, &none));
        assert!(use_color(
            ColorChoice::Always,
            false,
            &env(&[("NO_COLOR", "1")])
        ));
        assert!(!use_color(ColorChoice::Never, true, &none));
        assert!(!use_color(
            ColorChoice::Auto,
            true,
            &env(&[("NO_COLOR", "1")])
        ));
        // an empty NO_COLOR does not count
        assert!(use_color(
            ColorChoice::Auto,
            true,
            &env(&[("NO_COLOR", "")])
        ));
        assert!(use_color(
            ColorChoice::Auto,
            false,
            &env(&[("CLICOLOR_FORCE", "1")])
        ));
        assert!(!use_color(
            ColorChoice::Auto,
            false,
            &env(&[("CLICOLOR_FORCE", "0")])
        ));
        assert!(!use_color(
            ColorChoice::Auto,
            false,
            &env(&[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")])
        ));
        assert!(!use_color(
            ColorChoice::Auto,
            true,
            &env(&[("TERM", "dumb")])
        ));
    }
}
