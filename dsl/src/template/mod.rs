//! Templates: a static scan (what a template references, how each interpolation ends) and rendering
//! with Tera in three modes (plain, shell, SQL).
//!
//! Tera does not expose its syntax tree (its one analysis, `Tera::get_template_variables`, gives
//! top-level names without positions), so the references the compiler needs (`input.x`, `steps.y`)
//! come from a small scanner over the template's tags. Tera 2 stays the authority for syntax and
//! rendering: errors carry byte ranges, undefined variables fail, and `set_escape_fn` with
//! `render_str_to` gives one escape function per mode, writing into the `Bounded` writer.
//!
//! Shell mode: the escape function (and the `quote` filter) writes a NUL-delimited marker per value
//! (`write_shell_marker`); `place_shell_values` then finds each marker's place in the rendered
//! command with `shell::places` and refuses the render if one stands inside quotes, backquotes,
//! `$'…'`, `$((…))` or a here-document, else replaces it with the value POSIX-quoted (`'…'`, with
//! `'` written `'\''`). `| raw` opts out (an `unsafe-interpolation` warning at compile time, found
//! by `last_top_level_filter`); `raw` and `ident` values are not escaped again. SQL mode: only `|
//! ident` (`"…"`, `"` doubled) may interpolate; `refuse_sql` fails anything else. `Renderer::check`
//! renders against an empty context to catch unknown filters; loops over constant ranges run in
//! full (output is bounded, iterations are not).
//!
//! `scan.rs` holds the scanner and the quoted-interpolation check, `render.rs` the renderer and its
//! escape functions; this file the types both share.

mod render;
mod scan;
#[cfg(test)]
mod tests;

pub use render::{RenderError, Renderer, renderer, shell_quote, sql_ident};
pub use scan::{quoted_interpolations, quoted_interpolations_of, scan};

/// The longest template string accepted (bytes). Longer ones are refused before any parsing.
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;
/// The longest rendered output kept (bytes); a render that writes more fails.
pub const MAX_RENDER_BYTES: usize = 16 * 1024 * 1024;

/// How interpolated values are written into the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// As they are; a string that is exactly one `{{ expr }}` yields the typed value.
    Plain,
    /// POSIX-shell-quoted; `| raw` opts out.
    Shell,
    /// Refused unless it goes through `| ident` (identifier quoting) or `| raw`.
    Sql,
}

/// Whether a string is a template at all (cheap check before any scanning).
pub fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
}

/// A variable reference found by [`scan`]: `root` (`input`, `steps`, …) and its first key, if literal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    pub root: String,
    pub key: Option<String>,
    /// Byte range of the reference in the template text.
    pub start: usize,
    pub end: usize,
}

/// One `{{ … }}` block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interpolation {
    pub start: usize,
    pub end: usize,
    /// The last filter applied at the top level of the expression (`raw` in `{{ x | raw }}`).
    pub last_filter: Option<String>,
}

/// What a template uses, found without rendering it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    pub references: Vec<Reference>,
    pub interpolations: Vec<Interpolation>,
    /// The expression, when the whole template is exactly one `{{ expr }}`.
    pub single_expression: Option<String>,
    /// Every block is a `{{ path | filter … }}` of a form the scanner fully checks (so Tera's own syntax
    /// check can be skipped).
    pub simple: bool,
}

/// A problem in a template, located by byte range in the template text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateError {
    pub message: String,
    pub start: usize,
    pub end: usize,
}

impl TemplateError {
    fn new(message: impl Into<String>, start: usize, end: usize) -> Self {
        TemplateError {
            message: message.into(),
            start,
            end,
        }
    }
}
