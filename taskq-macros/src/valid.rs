//! Checks on the attribute and the function, each error spanned at the mistake and saying
//! how to fix it. Type questions (is the argument serializable, is the model a `Model`,
//! does the error convert into `TaskError`) are left to rustc by `expand`.

use proc_macro2::Span;
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::visit::Visit;
use syn::{Pat, Type};

use crate::ast::{generic_of, names_context, TaskFn};
use crate::attr::{self, Kind, TaskArgs};

/// Every error found so far, combined into one so a user sees them all in one compile.
#[derive(Default)]
pub struct Errors(Option<syn::Error>);

impl Errors {
    pub fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    pub fn finish(self) -> Option<syn::Error> {
        self.0
    }
}

fn err(span: Span, msg: impl std::fmt::Display) -> syn::Error {
    syn::Error::new(span, msg)
}

/// An error covering all of `node`, not only its first token.
fn err_at(node: impl ToTokens, msg: impl std::fmt::Display) -> syn::Error {
    syn::Error::new_spanned(node, msg)
}

/// Checks the keys together (each was checked alone while parsing).
pub fn check_args(args: &TaskArgs, kind: Kind, errors: &mut Errors) {
    if kind == Kind::Iterative && args.model.is_none() {
        errors.push(err(
            Span::call_site(),
            "`#[iterative_task]` needs the model it walks through: write `#[iterative_task(model = Student)]`, naming a type that implements `taskq_runtime::Model`",
        ));
    }
    if args.cron.is_none() {
        for (key, lit) in [("timezone", &args.timezone), ("catch_up", &args.catch_up)] {
            if let Some(lit) = lit {
                errors.push(err(
                    lit.span(),
                    format!("`{key}` applies only to a periodic task: add `cron = \"0 3 * * *\"` (its schedule), or remove `{key}`"),
                ));
            }
        }
    }
    let min = args
        .min_backoff
        .as_ref()
        .map_or(attr::DEFAULT_MIN_BACKOFF_MS, |d| d.millis);
    let max = args
        .max_backoff
        .as_ref()
        .map_or(attr::DEFAULT_MAX_BACKOFF_MS, |d| d.millis);
    if min > max {
        let (span, which) = match (&args.min_backoff, &args.max_backoff) {
            (_, Some(d)) => (d.lit.span(), "`max_backoff`"),
            (Some(d), None) => (d.lit.span(), "`min_backoff`"),
            (None, None) => unreachable!("the defaults are ordered"),
        };
        let defaulted = |d: &Option<attr::Dur>| if d.is_none() { " (the default)" } else { "" };
        errors.push(err(
            span,
            format!(
                "`min_backoff` ({}{}) is longer than `max_backoff` ({}{}); fix {which} so that min_backoff <= max_backoff",
                attr::format_millis(min),
                defaulted(&args.min_backoff),
                attr::format_millis(max),
                defaulted(&args.max_backoff),
            ),
        ));
    }
}

/// `unique_for` and `on_conflict` need `unique`.
fn check_unique_keys(args: &TaskArgs, errors: &mut Errors) {
    if args.unique.is_some() {
        return;
    }
    if let Some(d) = &args.unique_for {
        errors.push(err(
            d.lit.span(),
            "`unique_for` needs `unique`: add `unique = \"args\"` (or `unique = [\"arg\", ..]`) to say what makes two starts the same",
        ));
    }
    if let Some((_, lit)) = &args.on_conflict {
        errors.push(err(
            lit.span(),
            "`on_conflict` needs `unique`: add `unique = \"args\"` (or `unique = [\"arg\", ..]`) to say what makes two starts the same",
        ));
    }
}

/// Each name of `unique = [..]` is one of the function's stored arguments.
fn check_unique_names(task: &TaskFn, args: &TaskArgs, errors: &mut Errors) {
    let Some(attr::Unique::Only(names)) = &args.unique else {
        return;
    };
    let have: Vec<String> = task
        .args()
        .iter()
        .filter(|p| !p.is_context)
        .filter_map(|p| p.ident)
        .map(|i| syn::ext::IdentExt::unraw(i).to_string())
        .collect();
    for n in names {
        if have.contains(&n.value()) {
            continue;
        }
        let list = if have.is_empty() {
            "it takes none; use `unique = \"args\"` for one task at a time".to_string()
        } else {
            format!(
                "its arguments are: {}",
                have.iter()
                    .map(|h| format!("`{h}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        errors.push(err(
            n.span(),
            format!(
                "`{}` is not an argument of `{}`, so it cannot make the task unique; {list}",
                n.value(),
                task.ident()
            ),
        ));
    }
}

/// Checks the function's signature.
pub fn check_fn(task: &TaskFn, args: &TaskArgs, kind: Kind, errors: &mut Errors) {
    let sig = &task.func.sig;
    let mac = kind.macro_name();
    if sig.asyncness.is_none() {
        errors.push(err(
            sig.fn_token.span,
            format!("{mac} must be put on an `async fn`: add `async` before `fn`"),
        ));
    }
    if let Some(c) = &sig.constness {
        errors.push(err(c.span, "a task cannot be a `const fn`: remove `const`"));
    }
    // syn 3 models `unsafe`/`safe` as `Safety`; `safe fn` is only valid inside `extern` blocks,
    // where rustc itself rejects it on a plain function, so only `unsafe` needs our message.
    if let syn::Safety::Unsafe(u) = &sig.safety {
        errors.push(err(
            u.span,
            "a task cannot be an `unsafe fn`: the worker calls it with no one to uphold its safety contract; remove `unsafe` and use an `unsafe` block inside",
        ));
    }
    if let Some(v) = &sig.variadic {
        errors.push(err_at(v, "a task cannot be variadic"));
    }
    if !sig.generics.params.is_empty() {
        errors.push(err_at(&sig.generics,
            "a task cannot be generic: the worker decodes its arguments from JSON and must know their concrete types; use concrete types, or write one task per type",
        ));
    }
    if let Some(w) = &sig.generics.where_clause {
        errors.push(err_at(w,
            "a task cannot have a `where` clause: the worker must know its concrete argument types; remove it and use concrete types",
        ));
    }
    for r in &task.receivers {
        errors.push(err(
            r.self_token.span,
            "a task cannot take `self`: tasks are free functions the worker calls by name; move it out of the `impl` block and pass what it needs as arguments (or reach app state through `Context::state`)",
        ));
    }
    for (i, p) in task.params.iter().enumerate() {
        if !p.is_context {
            continue;
        }
        if i > 0 {
            errors.push(err_at(p.pat_type,
                "`Context` must be the first parameter of a task: move it before the task's arguments",
            ));
        } else if let Type::Reference(r) = p.ty {
            errors.push(err_at(
                r,
                "take the `Context` by value: write `ctx: Context` (it is cheap to clone)",
            ));
        }
    }
    for p in task.args() {
        if p.is_context {
            continue;
        }
        check_arg_pattern(&p.pat_type.pat, errors);
        check_arg_type(p.ty, errors);
    }
    check_output(task, errors);
    check_unique_keys(args, errors);
    check_unique_names(task, args, errors);
    if let Some(cron) = &args.cron {
        if task.args().iter().any(|p| !p.is_context) {
            errors.push(err(
                cron.span(),
                format!("a task with `cron` takes no arguments but `Context`: each tick starts it with none; remove the arguments, or drop `cron` and register a schedule with arguments at run time: `{}::schedule(\"a name\", \"{}\", args..).register(&queue)`", task.ident().unraw(), cron.value()),
            ));
        }
    }
    if kind == Kind::Iterative {
        check_batch_param(task, args, errors);
    }
}

fn check_arg_pattern(pat: &Pat, errors: &mut Errors) {
    let hint = match pat {
        Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => return,
        Pat::Ident(p) if p.by_ref.is_some() => format!(
            "take the argument by value: remove `ref` and write `{}: Type`",
            p.ident
        ),
        Pat::Wild(_) => {
            "name it, e.g. `_unused: Type` (the name is the key under which the argument is stored)"
                .to_string()
        }
        _ => "write `name: Type` and destructure it in the body (the name is the key under which the argument is stored)".to_string(),
    };
    errors.push(err_at(
        pat,
        format!("a task argument must be a plain name (`x` or `mut x`): {hint}"),
    ));
}

/// Borrowed and `impl Trait` argument types, anywhere in the type.
fn check_arg_type(ty: &Type, errors: &mut Errors) {
    struct Finder<'e> {
        errors: &'e mut Errors,
        top: bool,
    }
    impl<'ast> Visit<'ast> for Finder<'_> {
        fn visit_type_reference(&mut self, r: &'ast syn::TypeReference) {
            let owned = owned_suggestion(r);
            let place = if self.top {
                ""
            } else {
                " inside a task argument"
            };
            self.errors.push(err_at(r,
                format!(
                    "a task argument cannot be borrowed{place}: it is stored as JSON and decoded again when the task runs, so it must own its data; use `{owned}` instead"
                ),
            ));
        }
        fn visit_type_impl_trait(&mut self, t: &'ast syn::TypeImplTrait) {
            self.errors.push(err_at(t,
                "`impl Trait` cannot be a task argument: the worker decodes the argument from JSON and must know its concrete type; name the type (e.g. `String` rather than `impl Into<String>`)",
            ));
        }
        fn visit_type(&mut self, t: &'ast Type) {
            syn::visit::visit_type(self, t);
            self.top = false;
        }
    }
    Finder { errors, top: true }.visit_type(ty);
}

/// `&str` → `String`, `&[T]` → `Vec<T>`, `&Path` → `PathBuf`, `&T` → `T`.
fn owned_suggestion(r: &syn::TypeReference) -> String {
    let inner = &*r.elem;
    match inner {
        Type::Slice(s) => format!("Vec<{}>", tokens(&s.elem)),
        Type::Path(p) if p.qself.is_none() && p.path.is_ident("str") => "String".into(),
        Type::Path(p) if p.qself.is_none() && p.path.is_ident("Path") => "PathBuf".into(),
        Type::Path(p) if p.qself.is_none() && p.path.is_ident("OsStr") => "OsString".into(),
        Type::Path(p) if p.qself.is_none() && p.path.is_ident("CStr") => "CString".into(),
        Type::TraitObject(t) => format!("Box<{}>", tokens(t)),
        other => tokens(other),
    }
}

/// A type as a user would write it (`Vec<u8>` rather than `Vec < u8 >`).
pub fn tokens(t: &impl ToTokens) -> String {
    let s = t.to_token_stream().to_string();
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ' ' {
            let next = chars.peek().copied();
            let prev = out.chars().last();
            let tight = matches!(next, Some('<' | '>' | ',' | ':' | ')' | ']'))
                || matches!(prev, Some('<' | '&' | ':' | '(' | '['))
                || (prev == Some('>') && next == Some('>'));
            if tight {
                continue;
            }
        }
        out.push(c);
    }
    out
}

const RETURN_HINT: &str =
    "(`E` may also be any `std::error::Error + Send + Sync + 'static` type, `Box<dyn std::error::Error + Send + Sync>`, or `anyhow::Error` with taskq-runtime's `anyhow` feature)";

fn check_output(task: &TaskFn, errors: &mut Errors) {
    let Some(ty) = task.output() else {
        errors.push(err(
            task.func.sig.paren_token.span.close(),
            format!("a task must return `Result<(), E>`: add `-> Result<(), TaskError>` and end the body with `Ok(())` {RETURN_HINT}"),
        ));
        return;
    };
    let found = tokens(ty);
    let Some(ok) = generic_of(ty, "Result") else {
        errors.push(err_at(ty,
            format!("a task must return `Result<(), E>`, not `{found}`: write `-> Result<(), TaskError>` {RETURN_HINT}"),
        ));
        return;
    };
    let unit = matches!(ok, Type::Tuple(t) if t.elems.is_empty());
    if !unit {
        errors.push(err_at(ok,
            format!("a task returns `Result<(), E>`: nothing it returns on success is kept, so replace `{}` with `()` and return `Ok(())`", tokens(ok)),
        ));
    }
}

fn check_batch_param(task: &TaskFn, args: &TaskArgs, errors: &mut Errors) {
    let model = args
        .model
        .as_ref()
        .map_or_else(|| "Model".to_string(), tokens);
    let Some(batch) = task.args().first().filter(|p| !p.is_context) else {
        errors.push(err(
            task.func.sig.paren_token.span.close(),
            format!("an iterative task receives each batch as its first argument after the `Context`: add a parameter `batch: Vec<{model}>`"),
        ));
        return;
    };
    let wrong = |errors: &mut Errors| {
        errors.push(err_at(batch.ty,
            format!(
                "the first argument of an iterative task is the batch: expected `Vec<{model}>` (the task's `model`), found `{}`",
                tokens(batch.ty)
            ),
        ))
    };
    if matches!(batch.ty, Type::Reference(_)) || names_context(batch.ty) {
        // A borrowed slice was already reported with its owned form.
        if !matches!(batch.ty, Type::Reference(_)) {
            wrong(errors);
        }
        return;
    }
    let Some(elem) = generic_of(batch.ty, "Vec") else {
        wrong(errors);
        return;
    };
    if let Some(model) = &args.model {
        if let (Some(a), Some(b)) = (last_ident(elem), last_ident(model)) {
            if a != b {
                wrong(errors);
            }
        }
    }
}

fn last_ident(t: &Type) -> Option<&syn::Ident> {
    match t {
        Type::Path(p) => p.path.segments.last().map(|s| &s.ident),
        _ => None,
    }
}
