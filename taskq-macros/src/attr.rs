//! Parsing the keys of `#[task(...)]` and `#[iterative_task(...)]`.
//!
//! Every key goes through [`parse`]: one `parse_nested_meta` closure, one duplicate check,
//! and errors pushed into [`Errors`] so that every bad key shows up in one compile.

use proc_macro2::TokenStream;
use syn::meta::ParseNestedMeta;
use syn::parse::Parser;
use syn::{Expr, ExprLit, ExprUnary, Lit, LitStr, Path, Token, Type, UnOp};

use crate::valid::Errors;

/// Which macro is being expanded.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Plain,
    Iterative,
}

impl Kind {
    pub fn macro_name(self) -> &'static str {
        match self {
            Kind::Plain => "#[task]",
            Kind::Iterative => "#[iterative_task]",
        }
    }

    /// The keys this macro accepts, in the order the docs list them.
    fn keys(self) -> &'static [&'static str] {
        const PLAIN: &[&str] = &[
            "name",
            "queue",
            "max_attempts",
            "timeout",
            "min_backoff",
            "max_backoff",
            "max_doublings",
            "age_limit",
            "priority",
            "unique",
            "unique_for",
            "on_conflict",
            "cron",
            "timezone",
            "catch_up",
            "crate",
        ];
        const ITERATIVE: &[&str] = &[
            "model",
            "batch_size",
            "name",
            "queue",
            "max_attempts",
            "timeout",
            "min_backoff",
            "max_backoff",
            "max_doublings",
            "age_limit",
            "priority",
            "crate",
        ];
        match self {
            Kind::Plain => PLAIN,
            Kind::Iterative => ITERATIVE,
        }
    }
}

/// A duration key as written (`"1h30m"`), with its value in milliseconds.
pub struct Dur {
    pub millis: u64,
    pub lit: LitStr,
}

/// `unique = "args"` or `unique = ["to", "kind"]`.
pub enum Unique {
    /// Every argument (`"args"`).
    All,
    /// These arguments, each as written (checked against the function in `valid`).
    Only(Vec<LitStr>),
}

/// The keys of one attribute, each `None` when not written (the default applies).
#[derive(Default)]
pub struct TaskArgs {
    pub name: Option<LitStr>,
    pub queue: Option<LitStr>,
    pub max_attempts: Option<u32>,
    pub timeout: Option<Dur>,
    pub min_backoff: Option<Dur>,
    pub max_backoff: Option<Dur>,
    pub max_doublings: Option<u32>,
    pub age_limit: Option<Dur>,
    pub priority: Option<i32>,
    pub krate: Option<Path>,
    pub model: Option<Type>,
    pub batch_size: Option<usize>,
    pub unique: Option<Unique>,
    pub unique_for: Option<Dur>,
    /// `on_conflict = "replace"` (true) or `"refuse"` (false), as written.
    pub on_conflict: Option<(bool, LitStr)>,
    /// `cron = "0 3 * * *"`, checked by the parser the runtime uses.
    pub cron: Option<LitStr>,
    /// `timezone = "Europe/Paris"`, an IANA name.
    pub timezone: Option<LitStr>,
    /// `catch_up = "skip"` or `"last"`.
    pub catch_up: Option<LitStr>,
}

pub const DEFAULT_QUEUE: &str = "default";
pub const DEFAULT_MAX_ATTEMPTS: u32 = 25;
pub const DEFAULT_TIMEOUT_MS: u64 = 10 * 60 * 1000;
pub const DEFAULT_MIN_BACKOFF_MS: u64 = 1000;
pub const DEFAULT_MAX_BACKOFF_MS: u64 = 60 * 60 * 1000;
pub const DEFAULT_MAX_DOUBLINGS: u32 = 16;
pub const DEFAULT_BATCH_SIZE: usize = 100;

/// Parses the attribute's tokens. Bad keys and values are pushed to `errors`; parsing goes
/// on after them so that the next key is checked too.
pub fn parse(tokens: TokenStream, kind: Kind, errors: &mut Errors) -> TaskArgs {
    let mut args = TaskArgs::default();
    let mut seen: Vec<String> = Vec::new();
    let parser = syn::meta::parser(|meta| {
        let key = meta
            .path
            .get_ident()
            .map(|i| i.to_string())
            .unwrap_or_else(|| quote::ToTokens::to_token_stream(&meta.path).to_string());
        if !kind.keys().contains(&key.as_str()) {
            errors.push(unknown_key(&meta, &key, kind));
            return skip_value(&meta);
        }
        if seen.contains(&key) {
            errors.push(syn::Error::new_spanned(&meta.path,
                format!("duplicate key `{key}`: it is already set earlier in this attribute; keep only one"),
            ));
            return skip_value(&meta);
        }
        seen.push(key.clone());
        if !meta.input.peek(Token![=]) {
            errors.push(syn::Error::new_spanned(
                &meta.path,
                format!("expected a value: write `{key} = {}`", example(&key)),
            ));
            return skip_value(&meta);
        }
        let value = meta.value()?;
        match key.as_str() {
            "model" => args.model = Some(value.parse()?),
            "crate" => args.krate = Some(parse_crate_path(value.parse()?, errors)),
            _ => {
                let expr: Expr = value.parse()?;
                set_key(&mut args, &key, &expr, errors);
            }
        }
        Ok(())
    });
    if let Err(e) = parser.parse2(tokens) {
        errors.push(e);
    }
    args
}

/// Stores one `key = expr`, or pushes why the value is wrong.
fn set_key(args: &mut TaskArgs, key: &str, expr: &Expr, errors: &mut Errors) {
    let result = match key {
        "name" => string(key, expr).map(|s| args.name = Some(s)),
        "queue" => string(key, expr).map(|s| args.queue = Some(s)),
        "max_attempts" => int::<u32>(key, expr, 1, "a task needs at least one attempt to run")
            .map(|i| args.max_attempts = Some(i)),
        "max_doublings" => int::<u32>(key, expr, 0, "").map(|i| args.max_doublings = Some(i)),
        "batch_size" => int::<usize>(key, expr, 1, "a batch holds at least one entity")
            .map(|i| args.batch_size = Some(i)),
        "priority" => int::<i32>(key, expr, i32::MIN, "").map(|i| args.priority = Some(i)),
        "timeout" => duration(key, expr, true).map(|d| args.timeout = Some(d)),
        "min_backoff" => duration(key, expr, false).map(|d| args.min_backoff = Some(d)),
        "max_backoff" => duration(key, expr, false).map(|d| args.max_backoff = Some(d)),
        "age_limit" => duration(key, expr, true).map(|d| args.age_limit = Some(d)),
        "unique_for" => duration(key, expr, false).map(|d| args.unique_for = Some(d)),
        "unique" => unique(expr).map(|u| args.unique = Some(u)),
        "on_conflict" => on_conflict(expr).map(|c| args.on_conflict = Some(c)),
        "cron" => string(key, expr)
            .and_then(check_cron)
            .map(|s| args.cron = Some(s)),
        "timezone" => string(key, expr)
            .and_then(check_timezone)
            .map(|s| args.timezone = Some(s)),
        "catch_up" => string(key, expr)
            .and_then(check_catch_up)
            .map(|s| args.catch_up = Some(s)),
        _ => unreachable!("every key of Kind::keys is handled"),
    };
    if let Err(e) = result {
        errors.push(e);
    }
}

fn unknown_key(meta: &ParseNestedMeta, key: &str, kind: Kind) -> syn::Error {
    let valid = kind
        .keys()
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut msg = format!("unknown key `{key}`; expected one of: {valid}");
    if kind == Kind::Plain && (key == "model" || key == "batch_size") {
        msg.push_str(&format!(
            "\n`{key}` belongs to `#[iterative_task(model = M, ...)]`, for a task that walks through every entity of a model"
        ));
    } else if kind == Kind::Iterative && matches!(key, "unique" | "unique_for" | "on_conflict") {
        msg.push_str(&format!(
            "\n`{key}` belongs to `#[task]`; an iterative run is made unique at its start: `builder(..).unique_args()` or `.name(..)`"
        ));
    } else if let Some(hint) = did_you_mean(key) {
        msg.push_str(&format!("\nhelp: did you mean `{hint}`?"));
    }
    syn::Error::new_spanned(&meta.path, msg)
}

/// Familiar names from other task queues, mapped to taskq's.
fn did_you_mean(key: &str) -> Option<&'static str> {
    Some(match key {
        "retries" | "max_retries" | "attempts" | "retry" => "max_attempts",
        "deadline" | "time_limit" | "timeout_secs" => "timeout",
        "backoff" | "retry_delay" | "delay" => "min_backoff",
        "ttl" | "expires" | "max_age" => "age_limit",
        "queue_name" => "queue",
        "task_name" => "name",
        "batch" | "chunk_size" => "batch_size",
        "unique_period" | "unique_within" | "period" => "unique_for",
        "replace" | "debounce" => "on_conflict",
        "schedule" | "crontab" | "every" => "cron",
        "tz" | "time_zone" | "zone" => "timezone",
        "catchup" | "missed" | "misfire" => "catch_up",
        _ => return None,
    })
}

/// Consumes the value of a key that is reported as wrong, so the next key is still parsed.
fn skip_value(meta: &ParseNestedMeta) -> syn::Result<()> {
    if meta.input.peek(Token![=]) {
        meta.value()?.parse::<Expr>()?;
    } else if !meta.input.is_empty() && !meta.input.peek(Token![,]) {
        meta.input.parse::<proc_macro2::TokenTree>()?;
    }
    Ok(())
}

fn example(key: &str) -> &'static str {
    match key {
        "name" => "\"app::send_email\"",
        "queue" => "\"email\"",
        "max_attempts" => "5",
        "max_doublings" => "16",
        "priority" => "10",
        "batch_size" => "100",
        "timeout" => "\"30s\"",
        "min_backoff" => "\"1s\"",
        "max_backoff" => "\"1h\"",
        "age_limit" => "\"7d\"",
        "unique" => "\"args\"",
        "unique_for" => "\"1h\"",
        "on_conflict" => "\"replace\"",
        "model" => "Student",
        "crate" => "::taskq_runtime",
        "cron" => "\"0 3 * * *\"",
        "timezone" => "\"Europe/Paris\"",
        "catch_up" => "\"last\"",
        _ => "...",
    }
}

/// Parses a cron expression as the runtime's `Cron::parse` does (croner, seconds
/// optional, no year field), so one that compiles also parses when the worker starts.
fn check_cron(lit: LitStr) -> syn::Result<LitStr> {
    let parsed = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(&lit.value());
    match parsed {
        Ok(cron) => {
            // An expression that parses but matches no date (`0 0 30 2 *`: February 30th)
            // would register nothing when a worker starts: refuse it here. Without a year
            // field the calendar repeats every 400 years, well within croner's search.
            let start = chrono::NaiveDate::from_ymd_opt(2000, 1, 1)
                .and_then(|d| d.and_hms_opt(0, 0, 0));
            if start.is_some_and(|t| cron.find_next_occurrence(&t, false).is_err()) {
                return Err(syn::Error::new(
                    lit.span(),
                    format!(
                        "the cron expression `{}` never fires: no date matches it (February 30th, April 31st...)",
                        lit.value()
                    ),
                ));
            }
            Ok(lit)
        }
        Err(e) => Err(syn::Error::new(
            lit.span(),
            format!(
                "invalid cron expression `{}`: {e}\nwrite five fields (minute hour day-of-month month day-of-week, e.g. \"0 3 * * *\"), or six with seconds first (\"*/10 * * * * *\")",
                lit.value()
            ),
        )),
    }
}

/// An IANA time zone name that chrono-tz (the runtime's) knows.
fn check_timezone(lit: LitStr) -> syn::Result<LitStr> {
    match lit.value().parse::<chrono_tz::Tz>() {
        Ok(_) => Ok(lit),
        Err(_) => Err(syn::Error::new(
            lit.span(),
            format!(
                "unknown time zone `{}`: write an IANA name such as \"UTC\", \"Europe/Paris\" or \"America/New_York\" (the default is UTC)",
                lit.value()
            ),
        )),
    }
}

fn check_catch_up(lit: LitStr) -> syn::Result<LitStr> {
    match lit.value().as_str() {
        "skip" | "last" => Ok(lit),
        other => Err(syn::Error::new(
            lit.span(),
            format!("unknown catch-up policy `{other}`: write `catch_up = \"last\"` (the default: after missed ticks, run once for the last one) or `catch_up = \"skip\"` (drop missed ticks)"),
        )),
    }
}

/// `crate = path`, also accepted as a string (`crate = "tq"`) like tokio's.
fn parse_crate_path(expr: Expr, errors: &mut Errors) -> Path {
    match expr {
        Expr::Path(p) if p.qself.is_none() => p.path,
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => match s.parse::<Path>() {
            Ok(p) => p,
            Err(_) => {
                errors.push(syn::Error::new(
                    s.span(),
                    "expected a path to taskq_runtime, e.g. `crate = ::taskq_runtime`",
                ));
                default_crate()
            }
        },
        other => {
            errors.push(syn::Error::new_spanned(
                other,
                "expected a path to taskq_runtime, e.g. `crate = ::taskq_runtime`",
            ));
            default_crate()
        }
    }
}

pub fn default_crate() -> Path {
    syn::parse_quote!(::taskq_runtime)
}

fn string(key: &str, expr: &Expr) -> syn::Result<LitStr> {
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => {
            if s.value().trim().is_empty() {
                Err(syn::Error::new(
                    s.span(),
                    format!(
                        "`{key}` cannot be empty: write e.g. `{key} = {}`",
                        example(key)
                    ),
                ))
            } else {
                Ok(s.clone())
            }
        }
        other => Err(syn::Error::new_spanned(
            other,
            format!(
                "expected a string literal: write e.g. `{key} = {}`",
                example(key)
            ),
        )),
    }
}

const UNIQUE_HINT: &str = "write `unique = \"args\"` (every argument) or `unique = [\"to\", \"kind\"]` (the named arguments)";

/// `unique = "args"` or `unique = ["a", "b"]`: a non-empty list of distinct string
/// literals (whether each names an argument is checked in `valid`).
fn unique(expr: &Expr) -> syn::Result<Unique> {
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) if s.value() == "args" => Ok(Unique::All),
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Err(syn::Error::new(
            s.span(),
            format!(
                "`unique = \"{}\"` is not a uniqueness: {UNIQUE_HINT}",
                s.value()
            ),
        )),
        Expr::Array(a) => {
            if a.elems.is_empty() {
                return Err(syn::Error::new_spanned(
                    a,
                    format!("`unique` names no argument: {UNIQUE_HINT}"),
                ));
            }
            let mut names: Vec<LitStr> = Vec::new();
            let mut errors: Option<syn::Error> = None;
            let mut push = |e: syn::Error| match &mut errors {
                Some(all) => all.combine(e),
                None => errors = Some(e),
            };
            for e in &a.elems {
                match e {
                    Expr::Lit(ExprLit {
                        lit: Lit::Str(s), ..
                    }) => {
                        if names.iter().any(|n| n.value() == s.value()) {
                            push(syn::Error::new(
                                s.span(),
                                format!("`{}` is listed twice in `unique`; keep one", s.value()),
                            ));
                        } else {
                            names.push(s.clone());
                        }
                    }
                    other => push(syn::Error::new_spanned(
                        other,
                        "expected an argument's name as a string literal, e.g. `\"to\"`",
                    )),
                }
            }
            match errors {
                Some(e) => Err(e),
                None => Ok(Unique::Only(names)),
            }
        }
        other => Err(syn::Error::new_spanned(other, UNIQUE_HINT)),
    }
}

/// `on_conflict = "replace"` or `"refuse"`.
fn on_conflict(expr: &Expr) -> syn::Result<(bool, LitStr)> {
    let hint = "write `on_conflict = \"replace\"` (a start whose key a pending task holds replaces its arguments and due time) or `on_conflict = \"refuse\"` (the default)";
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => match s.value().as_str() {
            "replace" => Ok((true, s.clone())),
            "refuse" => Ok((false, s.clone())),
            other => Err(syn::Error::new(
                s.span(),
                format!("unknown `on_conflict = \"{other}\"`: {hint}"),
            )),
        },
        other => Err(syn::Error::new_spanned(other, hint)),
    }
}

/// An integer literal (with an optional minus sign) of at least `min`.
fn int<T>(key: &str, expr: &Expr, min: T, why_min: &str) -> syn::Result<T>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let (lit, negative) = match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Int(i), ..
        }) => (i, false),
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_),
            expr,
            ..
        }) => match &**expr {
            Expr::Lit(ExprLit {
                lit: Lit::Int(i), ..
            }) => (i, true),
            other => return Err(not_an_int(key, other)),
        },
        other => return Err(not_an_int(key, other)),
    };
    let digits = format!("{}{}", if negative { "-" } else { "" }, lit.base10_digits());
    let value: T = digits.parse().map_err(|_| {
        syn::Error::new_spanned(
            expr,
            format!("`{key} = {digits}` is out of range for `{key}`"),
        )
    })?;
    if value < min {
        let why = if why_min.is_empty() {
            String::new()
        } else {
            format!(": {why_min}")
        };
        return Err(syn::Error::new_spanned(
            expr,
            format!("`{key}` must be at least {min}{why}"),
        ));
    }
    Ok(value)
}

fn not_an_int(key: &str, expr: &Expr) -> syn::Error {
    let hint = match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => format!("; remove the quotes: `{key} = {}`", s.value()),
        _ => format!(": write e.g. `{key} = {}`", example(key)),
    };
    syn::Error::new_spanned(
        expr,
        format!("expected an integer literal for `{key}`{hint}"),
    )
}

fn duration(key: &str, expr: &Expr, nonzero: bool) -> syn::Result<Dur> {
    let lit = match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => s,
        Expr::Lit(ExprLit {
            lit: Lit::Int(i), ..
        }) => {
            return Err(syn::Error::new(
                i.span(),
                format!(
                    "expected a duration string with a unit: write e.g. `{key} = \"{}s\"` (units: ms, s, m, h, d)",
                    i.base10_digits()
                ),
            ))
        }
        other => {
            return Err(syn::Error::new_spanned(other,
                format!(
                    "expected a duration string: write e.g. `{key} = {}` (units: ms, s, m, h, d)",
                    example(key)
                ),
            ))
        }
    };
    let millis = parse_duration(&lit.value()).map_err(|why| {
        syn::Error::new(
            lit.span(),
            format!("invalid duration for `{key}`: {why}; write a number followed by a unit, one of: ms, s, m, h, d (e.g. \"250ms\", \"30s\", \"1h30m\")"),
        )
    })?;
    if nonzero && millis == 0 {
        return Err(syn::Error::new(
            lit.span(),
            format!(
                "`{key}` must be longer than zero, e.g. `{key} = {}`",
                example(key)
            ),
        ));
    }
    Ok(Dur {
        millis,
        lit: lit.clone(),
    })
}

/// Parses `"250ms"`, `"30s"`, `"5m"`, `"2h"`, `"1d"` and sums of them (`"1h30m"`, spaces
/// allowed between parts) into milliseconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err("the duration is empty".into());
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            let bad: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
            return Err(format!("expected a whole number, found `{bad}`"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{}` is too large", &rest[..digits]))?;
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let scale = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" => 60 * 1000,
            "h" => 60 * 60 * 1000,
            "d" => 24 * 60 * 60 * 1000,
            "" if rest.starts_with('.') => {
                return Err("fractions are not supported; use a smaller unit (e.g. \"90m\" rather than \"1.5h\")".into())
            }
            "" => return Err(format!("`{number}` has no unit")),
            other => return Err(format!("unknown unit `{other}`")),
        };
        total = number
            .checked_mul(scale)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(|| "the duration is too long".to_string())?;
        rest = rest[unit_len..].trim_start();
    }
    Ok(total)
}

/// Renders milliseconds the way a user would write them, for messages.
pub fn format_millis(ms: u64) -> String {
    const UNITS: &[(u64, &str)] = &[
        (24 * 60 * 60 * 1000, "d"),
        (60 * 60 * 1000, "h"),
        (60 * 1000, "m"),
        (1000, "s"),
        (1, "ms"),
    ];
    if ms == 0 {
        return "0s".into();
    }
    let mut rest = ms;
    let mut out = String::new();
    for &(scale, unit) in UNITS {
        if rest >= scale {
            out.push_str(&format!("{}{unit}", rest / scale));
            rest %= scale;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(250));
        assert_eq!(parse_duration("30s"), Ok(30_000));
        assert_eq!(parse_duration("5m"), Ok(300_000));
        assert_eq!(parse_duration("2h"), Ok(7_200_000));
        assert_eq!(parse_duration("1d"), Ok(86_400_000));
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration("1h 30m 5s"), Ok(5_405_000));
        assert_eq!(parse_duration("0s"), Ok(0));
        assert_eq!(
            parse_duration("3 parsecs"),
            Err("unknown unit `parsecs`".into())
        );
        assert_eq!(parse_duration("30"), Err("`30` has no unit".into()));
        assert_eq!(parse_duration(""), Err("the duration is empty".into()));
        assert!(parse_duration("1.5h")
            .expect_err("fractions are refused")
            .contains("fractions"));
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn formats() {
        assert_eq!(format_millis(5_400_000), "1h30m");
        assert_eq!(format_millis(250), "250ms");
        assert_eq!(format_millis(0), "0s");
    }
}
