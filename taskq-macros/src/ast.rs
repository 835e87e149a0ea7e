//! The task function as the macros see it: its optional `Context` parameter, its argument
//! parameters and its return type, borrowing the syn nodes they came from (for spans).

use syn::{FnArg, Ident, ItemFn, Pat, PatType, Receiver, ReturnType, Type};

/// An `async fn` under `#[task]` or `#[iterative_task]`.
pub struct TaskFn<'a> {
    pub func: &'a ItemFn,
    /// `self` parameters (always an error, reported by `valid`).
    pub receivers: Vec<&'a Receiver>,
    /// Every typed parameter, in order, the `Context` one included.
    pub params: Vec<Param<'a>>,
}

/// One typed parameter.
pub struct Param<'a> {
    pub pat_type: &'a PatType,
    /// The binding, when the pattern is a plain identifier (`x` or `mut x`).
    pub ident: Option<&'a Ident>,
    pub ty: &'a Type,
    /// Whether the type names `Context` (the runtime's, presumably).
    pub is_context: bool,
}

impl<'a> TaskFn<'a> {
    pub fn from_syn(func: &'a ItemFn) -> TaskFn<'a> {
        let mut receivers = Vec::new();
        let mut params = Vec::new();
        for input in &func.sig.inputs {
            match input {
                FnArg::Receiver(r) => receivers.push(r),
                FnArg::Typed(pat_type) => params.push(Param {
                    pat_type,
                    ident: match &*pat_type.pat {
                        Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => Some(&p.ident),
                        _ => None,
                    },
                    ty: &pat_type.ty,
                    is_context: names_context(&pat_type.ty),
                }),
            }
        }
        TaskFn {
            func,
            receivers,
            params,
        }
    }

    pub fn ident(&self) -> &'a Ident {
        &self.func.sig.ident
    }

    /// Whether the function takes a `Context` as its first parameter.
    pub fn takes_context(&self) -> bool {
        self.params.first().is_some_and(|p| p.is_context)
    }

    /// The parameters after the optional `Context`: what the task is started with (for an
    /// iterative task, the batch first).
    pub fn args(&self) -> &[Param<'a>] {
        let skip = usize::from(self.takes_context());
        &self.params[skip..]
    }

    /// The return type, or `None` when the function returns nothing.
    pub fn output(&self) -> Option<&'a Type> {
        match &self.func.sig.output {
            ReturnType::Type(_, ty) => Some(ty),
            ReturnType::Default => None,
        }
    }

    /// The `E` of a return type written `Result<(), E>` (`None` for `anyhow::Result<()>`,
    /// whose error type is not written).
    pub fn error_type(&self) -> Option<&'a Type> {
        generic_at(self.output()?, "Result", 1)
    }
}

/// Whether `ty` is a path whose last segment is `Context` (or a reference to one).
pub fn names_context(ty: &Type) -> bool {
    match ty {
        Type::Path(p) if p.qself.is_none() => p
            .path
            .segments
            .last()
            .is_some_and(|s| s.ident == "Context" && s.arguments.is_none()),
        Type::Reference(r) => names_context(&r.elem),
        Type::Paren(p) => names_context(&p.elem),
        _ => false,
    }
}

/// The first generic argument of a path type whose last segment is `name` (`Vec<T>` → `T`).
pub fn generic_of<'t>(ty: &'t Type, name: &str) -> Option<&'t Type> {
    generic_at(ty, name, 0)
}

/// The type argument at `index` of a path type whose last segment is `name`
/// (`Result<T, E>`, 1 → `E`).
fn generic_at<'t>(ty: &'t Type, name: &str, index: usize) -> Option<&'t Type> {
    let Type::Path(p) = ty else { return None };
    let seg = p.path.segments.last()?;
    if seg.ident != name {
        return None;
    }
    let syn::PathArguments::AngleBracketed(a) = &seg.arguments else {
        return None;
    };
    let mut types = a.args.iter().filter_map(|g| match g {
        syn::GenericArgument::Type(t) => Some(t),
        _ => None,
    });
    types.nth(index)
}
