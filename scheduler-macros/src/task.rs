//! Parsing and expansion of `#[task]`, on `proc_macro2` tokens so that it can be unit-tested.
//!
//! [`expand`] runs in three steps: [`parse_attrs`] reads the attribute's `key = value` list into
//! [`TaskAttrs`], [`analyse`] checks the function's signature and extracts what the generated code
//! needs ([`TaskSig`]), and [`generate`] writes the unit struct, its inherent impl (`new` and the
//! renamed body `__run`) and the `Task` impl.
//!
//! When anything is wrong we emit the user's function unchanged plus one `compile_error!` per
//! problem, each spanned at the offending tokens. Keeping the function means the rest of the user's
//! crate still resolves its name, so the compiler reports our message rather than a cascade of
//! "cannot find function" errors.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{
    Attribute, Expr, ExprLit, FnArg, GenericArgument, Ident, ItemFn, Lit, LitInt, LitStr, Meta,
    Pat, PathArguments, ReturnType, Token, Type,
};

/// The attribute keys `#[task(...)]` accepts, as listed in error messages.
const VALID_KEYS: &str = "name, queue, max_retries, timeout, priority, cron, tz, crate";

/// The accepted forms of `timeout`, as listed in error messages.
const TIMEOUT_FORMS: &str = "a duration string: a positive whole number followed by `ms`, `s`, \
     `m` or `h` (e.g. \"500ms\", \"30s\", \"2m\", \"1h\"), or an integer literal counting seconds";

/// Expands `#[task(attr)] item`.
///
/// Never fails: problems become `compile_error!` invocations next to the unchanged `item`.
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let func = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(func) => func,
        Err(err) => {
            let err = syn::Error::new(
                err.span(),
                format!("`#[task]` can only be applied to an `async fn`: {err}"),
            );
            return with_error(item, err);
        }
    };
    // Check both halves before giving up, so one compile reports every problem.
    match (parse_attrs(attr), analyse(&func)) {
        (Ok(attrs), Ok(sig)) => match (&attrs.cron, sig.params.first()) {
            (Some(cron), Some(_)) => with_error(
                item,
                syn::Error::new_spanned(
                    cron,
                    "`cron` needs a task without arguments (a `TaskContext` is fine): a tick has \
                     no arguments to give; declare a schedule with arguments with \
                     `WorkerBuilder::schedule`",
                ),
            ),
            _ => generate(&func, &attrs, &sig),
        },
        (Err(mut err), Err(more)) => {
            err.combine(more);
            with_error(item, err)
        }
        (Err(err), Ok(_)) | (Ok(_), Err(err)) => with_error(item, err),
    }
}

/// The user's tokens unchanged, followed by the error(s) as `compile_error!`.
fn with_error(item: TokenStream, err: syn::Error) -> TokenStream {
    let err = err.to_compile_error();
    quote! { #item #err }
}

/// The options written in `#[task(...)]`; `None` means "not written, use the default".
#[derive(Default)]
struct TaskAttrs {
    /// `name = "..."`: the registered task name (default: the function's name).
    name: Option<String>,
    /// `queue = "..."`: the default queue (default: the trait's, `"default"`).
    queue: Option<String>,
    /// `max_retries = N`.
    max_retries: Option<u32>,
    /// `timeout = ...`, normalised to milliseconds.
    timeout_ms: Option<u64>,
    /// `priority = 0..=9`.
    priority: Option<u8>,
    /// `cron = "..."`: a periodic schedule of the task (checked when the worker is built).
    cron: Option<LitStr>,
    /// `tz = "..."`: the cron schedule's IANA time zone (default `UTC`); only with `cron`.
    tz: Option<LitStr>,
    /// `crate = "path"`: where the generated code finds `__private` (default `::scheduler`).
    krate: Option<syn::Path>,
}

/// Parses the attribute's arguments: a comma-separated list of `key = literal`.
fn parse_attrs(attr: TokenStream) -> syn::Result<TaskAttrs> {
    let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(attr)?;
    let mut attrs = TaskAttrs::default();
    let mut errors: Option<syn::Error> = None;
    let mut seen: Vec<String> = Vec::new();
    for meta in metas {
        let result = parse_one(&mut attrs, &mut seen, &meta);
        if let Err(err) = result {
            match &mut errors {
                Some(errors) => errors.combine(err),
                None => errors = Some(err),
            }
        }
    }
    if let (Some(tz), None) = (&attrs.tz, &attrs.cron) {
        let err = syn::Error::new_spanned(tz, "`tz` is the time zone of `cron`: set `cron` too");
        match &mut errors {
            Some(errors) => errors.combine(err),
            None => errors = Some(err),
        }
    }
    match errors {
        Some(err) => Err(err),
        None => Ok(attrs),
    }
}

/// Parses one `key = value` into `attrs`, refusing keys already in `seen`.
fn parse_one(attrs: &mut TaskAttrs, seen: &mut Vec<String>, meta: &Meta) -> syn::Result<()> {
    let path = meta.path();
    let Some(ident) = path.get_ident() else {
        return Err(syn::Error::new_spanned(
            path,
            format!("expected an attribute key; valid keys: {VALID_KEYS}"),
        ));
    };
    let key = ident.unraw().to_string();
    if !matches!(
        key.as_str(),
        "name" | "queue" | "max_retries" | "timeout" | "priority" | "cron" | "tz" | "crate"
    ) {
        return Err(syn::Error::new_spanned(
            ident,
            format!("unknown attribute key `{key}`; valid keys: {VALID_KEYS}"),
        ));
    }
    let value = match meta {
        Meta::NameValue(nv) => &nv.value,
        Meta::Path(_) | Meta::List(_) => {
            return Err(syn::Error::new_spanned(
                meta,
                format!("attribute key `{key}` needs a value: write `{key} = ...`"),
            ));
        }
    };
    if seen.contains(&key) {
        return Err(syn::Error::new_spanned(
            ident,
            format!("duplicate attribute key `{key}`"),
        ));
    }
    seen.push(key.clone());

    match key.as_str() {
        "name" => {
            let lit = lit_str(&key, value, "\"send_reminder\"")?;
            let name = lit.value();
            if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(syn::Error::new_spanned(
                    lit,
                    "`name` must be non-empty and contain no whitespace",
                ));
            }
            attrs.name = Some(name);
        }
        "queue" => {
            let lit = lit_str(&key, value, "\"emails\"")?;
            let queue = lit.value();
            if !valid_queue(&queue) {
                return Err(syn::Error::new_spanned(
                    lit,
                    format!(
                        "invalid queue name {queue:?}: use 1-64 characters of A-Z a-z 0-9 _ - ."
                    ),
                ));
            }
            attrs.queue = Some(queue);
        }
        "max_retries" => {
            let lit = lit_int(&key, value, "5")?;
            check_suffix(lit, "u32", "max_retries")?;
            let n = lit.base10_parse::<u32>().map_err(|_| {
                syn::Error::new_spanned(
                    lit,
                    format!(
                        "`max_retries` must be a whole number from 0 to {}, got `{}`",
                        u32::MAX,
                        lit.base10_digits()
                    ),
                )
            })?;
            attrs.max_retries = Some(n);
        }
        "timeout" => {
            attrs.timeout_ms = Some(timeout_ms(value)?);
        }
        "priority" => {
            let lit = lit_int(&key, value, "5")?;
            check_suffix(lit, "u8", "priority")?;
            let priority = lit.base10_parse::<u8>().ok().filter(|p| *p <= 9);
            let Some(priority) = priority else {
                return Err(syn::Error::new_spanned(
                    lit,
                    format!(
                        "`priority` must be from 0 (lowest) to 9 (highest), got `{}`",
                        lit.base10_digits()
                    ),
                ));
            };
            attrs.priority = Some(priority);
        }
        "cron" => {
            let lit = lit_str(&key, value, "\"0 30 2 * * *\"")?;
            if lit.value().split_whitespace().count() == 0 {
                return Err(syn::Error::new_spanned(lit, "`cron` must not be empty"));
            }
            attrs.cron = Some(lit.clone());
        }
        "tz" => {
            attrs.tz = Some(lit_str(&key, value, "\"Europe/Paris\"")?.clone());
        }
        "crate" => {
            let lit = lit_str(&key, value, "\"::scheduler\"")?;
            let path = lit.parse::<syn::Path>().map_err(|_| {
                syn::Error::new_spanned(
                    lit,
                    format!(
                        "`crate` must be a path such as \"::scheduler\", got {:?}",
                        lit.value()
                    ),
                )
            })?;
            attrs.krate = Some(path);
        }
        _ => unreachable!("keys were checked against the valid list above"),
    }
    Ok(())
}

/// Mirrors `scheduler_core::validate_queue` (we cannot depend on it from a proc-macro crate that
/// keeps to syn/quote/proc-macro2): 1 to 64 characters of `A-Z a-z 0-9 _ - .`.
fn valid_queue(queue: &str) -> bool {
    !queue.is_empty()
        && queue.len() <= 64
        && queue
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The string literal `value`, or an error saying `key` wants one (with an `example`).
fn lit_str<'a>(key: &str, value: &'a Expr, example: &str) -> syn::Result<&'a LitStr> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => Ok(lit),
        _ => Err(syn::Error::new_spanned(
            value,
            format!("`{key}` expects a string literal, e.g. `{key} = {example}`"),
        )),
    }
}

/// The integer literal `value`, or an error saying `key` wants one (with an `example`).
fn lit_int<'a>(key: &str, value: &'a Expr, example: &str) -> syn::Result<&'a LitInt> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Int(lit), ..
        }) => Ok(lit),
        _ => Err(syn::Error::new_spanned(
            value,
            format!("`{key}` expects a non-negative integer literal, e.g. `{key} = {example}`"),
        )),
    }
}

/// Refuses an integer suffix other than none or `allowed` (`max_retries = 5i8` is a mistake).
fn check_suffix(lit: &LitInt, allowed: &str, key: &str) -> syn::Result<()> {
    match lit.suffix() {
        "" => Ok(()),
        s if s == allowed => Ok(()),
        s => Err(syn::Error::new_spanned(
            lit,
            format!("`{key}` is a `{allowed}`; remove the `{s}` suffix"),
        )),
    }
}

/// The `timeout` value in milliseconds: a duration string or an integer literal of seconds.
fn timeout_ms(value: &Expr) -> syn::Result<u64> {
    let bad = |msg: String| syn::Error::new_spanned(value, msg);
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => parse_duration_ms(&lit.value())
            .map_err(|why| bad(format!("invalid `timeout` {:?}: {why}", lit.value()))),
        Expr::Lit(ExprLit {
            lit: Lit::Int(lit), ..
        }) => {
            check_suffix(lit, "u64", "timeout")?;
            let secs = lit
                .base10_parse::<u64>()
                .map_err(|_| bad(format!("invalid `timeout`: expected {TIMEOUT_FORMS}")))?;
            secs_to_ms(secs).map_err(|why| bad(format!("invalid `timeout` {secs}: {why}")))
        }
        _ => Err(bad(format!("`timeout` expects {TIMEOUT_FORMS}"))),
    }
}

/// Whole seconds to milliseconds, refusing zero and overflow.
fn secs_to_ms(secs: u64) -> Result<u64, String> {
    match secs.checked_mul(1000) {
        Some(0) => Err("a timeout must be greater than zero".to_owned()),
        Some(ms) => Ok(ms),
        None => Err("too large".to_owned()),
    }
}

/// Parses `"500ms"`, `"30s"`, `"2m"`, `"1h"` into milliseconds. Zero is refused: a task that may
/// run for no time at all would time out on every attempt.
fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let expected = || format!("expected {TIMEOUT_FORMS}");
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return Err(expected());
    }
    let n: u64 = digits.parse().map_err(|_| "too large".to_owned())?;
    let per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(expected()),
    };
    match n.checked_mul(per_unit) {
        Some(0) => Err("a timeout must be greater than zero".to_owned()),
        Some(ms) => Ok(ms),
        None => Err("too large".to_owned()),
    }
}

/// What the generated code needs from the function's signature.
struct TaskSig {
    /// Whether the first parameter is the `TaskContext`.
    takes_ctx: bool,
    /// The other parameters, names without `mut`, in order: the fields of `Args`.
    params: Vec<(Ident, Type)>,
    /// `T` and `E` of `-> Result<T, E>`; `None` when the function returns `()` implicitly.
    result: Option<(Type, Type)>,
}

/// Checks that `func` is a supported task function and extracts its [`TaskSig`].
fn analyse(func: &ItemFn) -> syn::Result<TaskSig> {
    let sig = &func.sig;
    let mut errors: Vec<syn::Error> = Vec::new();

    if sig.asyncness.is_none() {
        errors.push(syn::Error::new_spanned(
            sig.fn_token,
            "`#[task]` functions must be `async`: write `async fn`",
        ));
    }
    if let Some(token) = &sig.constness {
        errors.push(syn::Error::new_spanned(
            token,
            "`#[task]` functions cannot be `const`",
        ));
    }
    if let Some(token) = &sig.unsafety {
        errors.push(syn::Error::new_spanned(
            token,
            "`#[task]` functions cannot be `unsafe`",
        ));
    }
    if let Some(abi) = &sig.abi {
        errors.push(syn::Error::new_spanned(
            abi,
            "`#[task]` functions cannot have an `extern` ABI",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(syn::Error::new_spanned(
            variadic,
            "`#[task]` functions cannot be variadic",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.push(syn::Error::new_spanned(
            &sig.generics,
            "`#[task]` functions cannot have generic or lifetime parameters: a task's arguments \
             are deserialized into concrete types, so use concrete, owned types",
        ));
    }

    let mut takes_ctx = false;
    let mut params = Vec::new();
    for (index, input) in sig.inputs.iter().enumerate() {
        let typed = match input {
            FnArg::Receiver(receiver) => {
                errors.push(syn::Error::new_spanned(
                    receiver,
                    "`#[task]` cannot be used on methods: remove the `self` receiver and pass \
                     what the task needs as arguments or shared worker state",
                ));
                continue;
            }
            FnArg::Typed(typed) => typed,
        };
        let ident = match &*typed.pat {
            Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() => pat.ident.clone(),
            other => {
                errors.push(syn::Error::new_spanned(
                    other,
                    "`#[task]` parameters must be plain `name: Type` (or `mut name: Type`); \
                     destructure inside the function body instead",
                ));
                continue;
            }
        };
        let ty = &*typed.ty;
        if is_task_context(ty) {
            if index == 0 {
                takes_ctx = true;
            } else {
                errors.push(syn::Error::new_spanned(
                    ty,
                    "the `TaskContext` parameter must come first",
                ));
            }
            continue;
        }
        match ty {
            Type::Reference(reference) => {
                let msg = if is_task_context(&reference.elem) {
                    "take the context by value: `ctx: TaskContext` (it is cheap to clone)"
                } else {
                    "`#[task]` parameters are deserialized from the queue, so they must be owned \
                     types: use e.g. `String` instead of `&str`, `Vec<T>` instead of `&[T]`"
                };
                errors.push(syn::Error::new_spanned(ty, msg));
                continue;
            }
            Type::ImplTrait(_) => {
                errors.push(syn::Error::new_spanned(
                    ty,
                    "`#[task]` functions cannot be generic: `impl Trait` parameters are not \
                     supported, use a concrete type",
                ));
                continue;
            }
            _ => {}
        }
        params.push((ident, ty.clone()));
    }

    let result = match &sig.output {
        ReturnType::Default => None,
        ReturnType::Type(_, ty) => match result_args(ty) {
            Some(pair) => Some(pair),
            None => {
                errors.push(syn::Error::new_spanned(
                    ty,
                    "`#[task]` functions must return `Result<T, E>` (written out with both type \
                     arguments, where `E` converts into `TaskError`) or nothing",
                ));
                None
            }
        },
    };

    let mut errors = errors.into_iter();
    match errors.next() {
        None => Ok(TaskSig {
            takes_ctx,
            params,
            result,
        }),
        Some(mut first) => {
            first.extend(errors);
            Err(first)
        }
    }
}

/// Whether `ty` names `TaskContext` (by the last segment of its path, however it was imported).
fn is_task_context(ty: &Type) -> bool {
    match ty {
        Type::Path(path) if path.qself.is_none() => path
            .path
            .segments
            .last()
            .is_some_and(|seg| seg.ident == "TaskContext" && seg.arguments.is_none()),
        Type::Paren(paren) => is_task_context(&paren.elem),
        Type::Group(group) => is_task_context(&group.elem),
        _ => false,
    }
}

/// `T` and `E` when `ty` is a path ending in `Result<T, E>`.
fn result_args(ty: &Type) -> Option<(Type, Type)> {
    let Type::Path(path) = ty else {
        return match ty {
            Type::Paren(paren) => result_args(&paren.elem),
            Type::Group(group) => result_args(&group.elem),
            _ => None,
        };
    };
    if path.qself.is_some() {
        return None;
    }
    let last = path.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    let mut types = args.args.iter().map(|arg| match arg {
        GenericArgument::Type(ty) => Some(ty.clone()),
        _ => None,
    });
    match (types.next(), types.next(), types.next()) {
        (Some(Some(ok)), Some(Some(err)), None) => Some((ok, err)),
        _ => None,
    }
}

/// Whether `attr` is `#[doc = ...]` (including `///` comments).
fn is_doc(attr: &Attribute) -> bool {
    attr.path().is_ident("doc")
}

/// Whether `attr` is `#[cfg(...)]`, which must gate every item we generate, not just one.
fn is_cfg(attr: &Attribute) -> bool {
    attr.path().is_ident("cfg")
}

/// Writes the struct, its inherent impl and its `Task` impl.
fn generate(func: &ItemFn, attrs: &TaskAttrs, sig: &TaskSig) -> TokenStream {
    let krate = attrs
        .krate
        .clone()
        .unwrap_or_else(|| syn::parse_quote!(::scheduler));
    let private = quote!(#krate::__private);
    let vis = &func.vis;
    let ident = &func.sig.ident;
    let name = attrs
        .name
        .clone()
        .unwrap_or_else(|| ident.unraw().to_string());

    let docs = func.attrs.iter().filter(|a| is_doc(a));
    let cfgs: Vec<&Attribute> = func.attrs.iter().filter(|a| is_cfg(a)).collect();

    // The user's function moves into the inherent impl, renamed, with its body untouched. Its
    // other attributes (`#[allow]`, `#[tracing::instrument]`...) stay on it.
    let mut body_fn = func.clone();
    body_fn.sig.ident = Ident::new("__run", ident.span());
    body_fn.vis = syn::Visibility::Inherited;
    body_fn.attrs.retain(|a| !is_doc(a));

    let arg_names: Vec<&Ident> = sig.params.iter().map(|(name, _)| name).collect();
    let arg_types: Vec<&Type> = sig.params.iter().map(|(_, ty)| ty).collect();

    // Locals of `run` are mixed-site so that they can never collide with the user's parameter
    // names (a parameter called `args` or `ctx`, say).
    let ctx = Ident::new("__ctx", Span::mixed_site());
    let args = Ident::new("__args", Span::mixed_site());
    let locals: Vec<Ident> = (0..sig.params.len())
        .map(|i| format_ident!("__arg{}", i, span = Span::mixed_site()))
        .collect();
    let ctx_arg = sig.takes_ctx.then(|| quote!(#ctx,));

    let output_ty = match &sig.result {
        Some((ok, _)) => ok.to_token_stream(),
        None => quote!(()),
    };
    let call = quote!(Self::__run(#ctx_arg #(#locals),*).await);
    let finish = match &sig.result {
        // The conversion is spanned at `E`, so that "`NotAnError: std::error::Error` is not
        // satisfied" points at the user's error type rather than at `#[task]`.
        Some((_, err)) => {
            let error = Ident::new("__error", Span::mixed_site());
            let value = Ident::new("__value", Span::mixed_site());
            let into = quote_spanned! {err.span()=>
                <#err as ::core::convert::Into<#private::TaskError>>::into
            };
            quote! {
                match #call {
                    ::core::result::Result::Ok(#value) => ::core::result::Result::Ok(#value),
                    ::core::result::Result::Err(#error) => ::core::result::Result::Err(#into(#error)),
                }
            }
        }
        None => quote! {
            #call;
            ::core::result::Result::Ok(())
        },
    };

    let queue = attrs
        .queue
        .as_ref()
        .map(|q| quote!(const QUEUE: &'static str = #q;));
    let max_retries = attrs
        .max_retries
        .map(|n| quote!(const MAX_RETRIES: u32 = #n;));
    let timeout = attrs.timeout_ms.map(|ms| {
        quote!(
            const TIMEOUT: ::core::time::Duration = ::core::time::Duration::from_millis(#ms);
        )
    });
    let priority = attrs.priority.map(|p| quote!(const PRIORITY: u8 = #p;));
    let cron = attrs.cron.as_ref().map(|expr| {
        let tz = attrs
            .tz
            .clone()
            .unwrap_or_else(|| LitStr::new("UTC", Span::call_site()));
        quote! {
            fn cron() -> ::core::option::Option<(
                &'static str,
                &'static str,
                #private::TaskCall<Self>,
            )> {
                ::core::option::Option::Some((#expr, #tz, #private::TaskCall::new(())))
            }
        }
    });

    quote! {
        #(#cfgs)*
        #(#docs)*
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, Default)]
        #vis struct #ident;

        #(#cfgs)*
        impl #ident {
            /// Builds a call of this task with these arguments (enqueue it with `.send(&client)`).
            #[allow(dead_code)]
            #vis fn new(#(#arg_names: #arg_types),*) -> #private::TaskCall<#ident> {
                #private::TaskCall::new((#(#arg_names,)*))
            }

            #body_fn
        }

        #(#cfgs)*
        impl #private::Task for #ident {
            const NAME: &'static str = #name;
            #queue
            #max_retries
            #timeout
            #priority
            type Args = (#(#arg_types,)*);
            type Output = #output_ty;
            #cron

            fn run(
                #ctx: #private::TaskContext,
                #args: Self::Args,
            ) -> impl ::core::future::Future<
                Output = ::core::result::Result<Self::Output, #private::TaskError>,
            > + ::core::marker::Send {
                async move {
                    let (#(#locals,)*) = #args;
                    #finish
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error message of a failed parse, for assertions.
    fn attr_error(tokens: TokenStream) -> String {
        match parse_attrs(tokens) {
            Ok(_) => panic!("expected an error"),
            Err(err) => err.to_string(),
        }
    }

    /// The error messages (all of them) of a failed signature check.
    fn sig_errors(func: TokenStream) -> Vec<String> {
        let func: ItemFn = syn::parse2(func).expect("test input is a function");
        match analyse(&func) {
            Ok(_) => panic!("expected an error"),
            Err(err) => err.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    /// Parses `expand`'s output as a file, proving it is well-formed Rust.
    fn expand_file(attr: TokenStream, item: TokenStream) -> syn::File {
        let out = expand(attr, item);
        syn::parse2(out.clone()).unwrap_or_else(|e| panic!("bad expansion {e}: {out}"))
    }

    /// Normalises token spacing so expected snippets can be compared as strings.
    fn norm(tokens: impl ToTokens) -> String {
        tokens.to_token_stream().to_string()
    }

    /// Asserts that `text` (a token string) contains the tokens of `snippet`, ignoring spacing
    /// (which differs between tokens from `quote!` and from parsing). The snippet is a string,
    /// not `quote!`, so that rustfmt cannot reformat it.
    fn assert_contains(text: &str, snippet: &str) {
        let squash = |s: &str| s.split_whitespace().collect::<String>();
        let snippet: TokenStream = snippet.parse().expect("snippet is valid tokens");
        let snippet = squash(&norm(snippet));
        assert!(
            squash(text).contains(&snippet),
            "`{snippet}` not in\n{text}"
        );
    }

    /// Every key parses into its field; the timeout is normalised to milliseconds.
    #[test]
    fn parses_all_keys() {
        let attrs = parse_attrs(quote!(
            name = "remind",
            queue = "emails",
            max_retries = 5,
            timeout = "30s",
            priority = 9,
            crate = "my::sched",
        ))
        .unwrap();
        assert_eq!(attrs.name.as_deref(), Some("remind"));
        assert_eq!(attrs.queue.as_deref(), Some("emails"));
        assert_eq!(attrs.max_retries, Some(5));
        assert_eq!(attrs.timeout_ms, Some(30_000));
        assert_eq!(attrs.priority, Some(9));
        assert_eq!(norm(attrs.krate.unwrap()), norm(quote!(my::sched)));
    }

    /// `cron` and `tz` are kept as written; `tz` alone, or `cron` on a task with arguments, is
    /// refused; the generated `cron()` gives the expression, the zone (UTC by default) and a
    /// call without arguments.
    #[test]
    fn cron_keys() {
        let attrs = parse_attrs(quote!(cron = "0 30 2 * * *", tz = "Europe/Paris")).unwrap();
        assert_eq!(attrs.cron.unwrap().value(), "0 30 2 * * *");
        assert_eq!(attrs.tz.unwrap().value(), "Europe/Paris");
        assert_eq!(
            attr_error(quote!(tz = "UTC")),
            "`tz` is the time zone of `cron`: set `cron` too"
        );
        assert_eq!(attr_error(quote!(cron = " ")), "`cron` must not be empty");
        let text = norm(expand(
            quote!(cron = "*/5 * * * *"),
            quote!(
                async fn tidy(ctx: TaskContext) {}
            ),
        ));
        assert_contains(
            &text,
            r#"Some(("*/5 * * * *", "UTC", ::scheduler::__private::TaskCall::new(())))"#,
        );
        let text = norm(expand(
            quote!(cron = "*/5 * * * *"),
            quote!(
                async fn tidy(user: u64) {}
            ),
        ));
        assert_contains(&text, "compile_error !");
        assert!(text.contains("needs a task without arguments"), "{text}");
        assert!(!text.contains("impl"), "{text}");
    }

    /// No arguments at all means every option takes its default.
    #[test]
    fn empty_attribute_is_all_defaults() {
        let attrs = parse_attrs(TokenStream::new()).unwrap();
        assert!(attrs.name.is_none());
        assert!(attrs.queue.is_none());
        assert!(attrs.max_retries.is_none());
        assert!(attrs.timeout_ms.is_none());
        assert!(attrs.priority.is_none());
        assert!(attrs.krate.is_none());
    }

    /// Duration strings in each unit, and integer seconds, become milliseconds.
    #[test]
    fn timeout_forms() {
        for (text, ms) in [
            ("1ms", 1),
            ("500ms", 500),
            ("30s", 30_000),
            ("2m", 120_000),
            ("1h", 3_600_000),
            ("24h", 86_400_000),
        ] {
            assert_eq!(parse_duration_ms(text), Ok(ms), "{text}");
        }
        let attrs = parse_attrs(quote!(timeout = 45)).unwrap();
        assert_eq!(attrs.timeout_ms, Some(45_000));
        let attrs = parse_attrs(quote!(timeout = 45u64)).unwrap();
        assert_eq!(attrs.timeout_ms, Some(45_000));
    }

    /// Malformed duration strings, zero and overflow are refused.
    #[test]
    fn timeout_rejects() {
        for text in [
            "",
            "s",
            "30",
            "30 s",
            " 30s",
            "30S",
            "30sec",
            "1.5s",
            "-1s",
            "0s",
            "0ms",
            "1d",
            "30s ",
            "99999999999999999999s",
            "9999999999999999h",
        ] {
            assert!(
                parse_duration_ms(text).is_err(),
                "{text:?} should be refused"
            );
        }
        let msg = attr_error(quote!(timeout = "30 seconds"));
        assert!(msg.contains("invalid `timeout` \"30 seconds\""), "{msg}");
        assert!(msg.contains("\"500ms\", \"30s\", \"2m\", \"1h\""), "{msg}");
        assert!(attr_error(quote!(timeout = 0)).contains("greater than zero"));
        assert!(attr_error(quote!(timeout = 1.5)).contains("`timeout` expects a duration string"));
    }

    /// An unknown key is named, with the list of valid ones.
    #[test]
    fn unknown_key() {
        assert_eq!(
            attr_error(quote!(queu = "emails")),
            "unknown attribute key `queu`; valid keys: name, queue, max_retries, timeout, \
             priority, cron, tz, crate"
        );
        assert!(attr_error(quote!(a::b = 1)).contains("expected an attribute key"));
    }

    /// Literals of the wrong kind name the key and show an example.
    #[test]
    fn wrong_literal_types() {
        assert_eq!(
            attr_error(quote!(queue = 5)),
            "`queue` expects a string literal, e.g. `queue = \"emails\"`"
        );
        assert_eq!(
            attr_error(quote!(max_retries = "5")),
            "`max_retries` expects a non-negative integer literal, e.g. `max_retries = 5`"
        );
        assert!(attr_error(quote!(max_retries = -1)).contains("from 0 to 4294967295"));
        assert!(attr_error(quote!(name = some_const)).contains("`name` expects a string literal"));
        assert!(attr_error(quote!(crate = ::scheduler)).contains("`crate` expects a string"));
        assert!(attr_error(quote!(max_retries = 5i8)).contains("remove the `i8` suffix"));
        assert!(attr_error(quote!(max_retries = 5_000_000_000)).contains("from 0 to 4294967295"));
    }

    /// Priority is limited to 0..=9.
    #[test]
    fn priority_range() {
        assert_eq!(parse_attrs(quote!(priority = 0)).unwrap().priority, Some(0));
        assert_eq!(
            attr_error(quote!(priority = 10)),
            "`priority` must be from 0 (lowest) to 9 (highest), got `10`"
        );
        assert!(attr_error(quote!(priority = 300)).contains("got `300`"));
    }

    /// Keys without values, repeated keys, and bad names/queues/paths are refused.
    #[test]
    fn other_attribute_errors() {
        assert!(attr_error(quote!(queue)).contains("needs a value: write `queue = ...`"));
        assert!(attr_error(quote!(queue("x"))).contains("needs a value"));
        assert_eq!(
            attr_error(quote!(queue = "a", queue = "b")),
            "duplicate attribute key `queue`"
        );
        assert!(attr_error(quote!(name = "")).contains("non-empty"));
        assert!(attr_error(quote!(queue = "a/b")).contains("invalid queue name"));
        assert!(attr_error(quote!(queue = "{x}")).contains("invalid queue name"));
        assert!(attr_error(quote!(crate = "not a path")).contains("`crate` must be a path"));
    }

    /// Several problems are all reported, not just the first.
    #[test]
    fn reports_every_attribute_error() {
        let err = parse_attrs(quote!(queu = "x", priority = 10))
            .err()
            .unwrap();
        assert_eq!(err.into_iter().count(), 2);
    }

    /// The context is recognised by type in first position and left out of `Args`.
    #[test]
    fn signature_with_context() {
        let func: ItemFn = syn::parse_quote! {
            async fn f(ctx: scheduler::TaskContext, mut x: u32, y: String) -> Result<u32, E> {
                Ok(x)
            }
        };
        let sig = analyse(&func).unwrap_or_else(|e| panic!("{e}"));
        assert!(sig.takes_ctx);
        let names: Vec<String> = sig.params.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(names, ["x", "y"]);
        let (ok, err) = sig.result.unwrap();
        assert_eq!(norm(ok), "u32");
        assert_eq!(norm(err), "E");
    }

    /// Each unsupported signature gets its own message.
    #[test]
    fn signature_errors() {
        let one = |f: TokenStream| {
            let errors = sig_errors(f);
            assert_eq!(errors.len(), 1, "{errors:?}");
            errors.into_iter().next().unwrap()
        };
        assert!(one(quote!(
            fn f() {}
        ))
        .contains("must be `async`"));
        assert!(one(quote!(
            async fn f(&self) {}
        ))
        .contains("remove the `self` receiver"));
        assert!(one(quote!(
            async fn f<T>(x: T) {}
        ))
        .contains("cannot have generic"));
        assert!(one(quote!(
            async fn f<'a>() {}
        ))
        .contains("cannot have generic"));
        assert!(one(quote!(
            async fn f(x: impl Send) {}
        ))
        .contains("`impl Trait`"));
        assert!(one(quote!(
            async fn f((a, b): (u8, u8)) {}
        ))
        .contains("plain `name: Type`"));
        assert!(one(quote!(
            async fn f(_: u8) {}
        ))
        .contains("plain `name: Type`"));
        assert!(one(quote!(
            async fn f(ref a: u8) {}
        ))
        .contains("plain `name: Type`"));
        assert!(one(quote!(
            async fn f(s: &str) {}
        ))
        .contains("owned types"));
        assert!(one(quote!(
            async fn f(c: &TaskContext) {}
        ))
        .contains("by value"));
        assert!(one(quote!(
            async fn f(x: u8, c: TaskContext) {}
        ))
        .contains("must come first"));
        assert!(one(quote!(
            async fn f() -> u32 {
                1
            }
        ))
        .contains("must return `Result<T, E>`"));
        assert!(one(quote!(
            async fn f() -> io::Result<u32> {
                1
            }
        ))
        .contains("Result<T, E>"));
        assert!(one(quote!(
            async unsafe fn f() {}
        ))
        .contains("`unsafe`"));
    }

    /// A function with several problems gets all of them reported.
    #[test]
    fn reports_every_signature_error() {
        let errors = sig_errors(quote!(
            fn f<T>(&self, (a, b): T) -> u8 {}
        ));
        assert_eq!(errors.len(), 5, "{errors:?}");
    }

    /// The expansion has the struct, `new`, the renamed body and the `Task` impl with exactly
    /// the constants the user set.
    #[test]
    fn expansion_shape() {
        let file = expand_file(
            quote!(queue = "emails", timeout = "2m"),
            quote! {
                /// Sends it.
                #[allow(unused)]
                pub async fn send_reminder(user_id: u64, text: String) -> Result<(), TaskError> {
                    Ok(())
                }
            },
        );
        assert_eq!(file.items.len(), 3);
        let syn::Item::Struct(st) = &file.items[0] else {
            panic!("expected the struct first")
        };
        assert_eq!(st.ident, "send_reminder");
        assert!(matches!(st.vis, syn::Visibility::Public(_)));
        assert!(st.attrs.iter().any(is_doc), "docs carried to the struct");

        let syn::Item::Impl(inherent) = &file.items[1] else {
            panic!("expected the inherent impl")
        };
        let text = norm(inherent);
        assert_contains(
            &text,
            "pub fn new(user_id: u64, text: String) -> ::scheduler::__private::TaskCall<send_reminder> \
             { ::scheduler::__private::TaskCall::new((user_id, text,)) }",
        );
        assert_contains(
            &text,
            "#[allow(unused)] async fn __run(user_id: u64, text: String)",
        );

        let syn::Item::Impl(task) = &file.items[2] else {
            panic!("expected the Task impl")
        };
        let text = norm(task);
        assert_contains(&text, "impl ::scheduler::__private::Task for send_reminder");
        assert_contains(&text, "const NAME: &'static str = \"send_reminder\";");
        assert_contains(&text, "const QUEUE: &'static str = \"emails\";");
        assert_contains(
            &text,
            "const TIMEOUT: ::core::time::Duration = ::core::time::Duration::from_millis(120000u64);",
        );
        assert!(!text.contains("MAX_RETRIES"), "{text}");
        assert!(!text.contains("PRIORITY"), "{text}");
        assert_contains(&text, "type Args = (u64, String,);");
        assert_contains(&text, "type Output = ();");
    }

    /// A zero-parameter, no-return function gets `Args = ()`, `Output = ()`, and an `Ok(())`.
    #[test]
    fn expansion_unit() {
        let file = expand_file(
            quote!(
                crate = "crate::sched",
                name = "tick",
                max_retries = 0,
                priority = 7
            ),
            quote!(
                async fn tick_fn() {}
            ),
        );
        let text = norm(&file);
        assert_contains(&text, "impl crate::sched::__private::Task for tick_fn");
        assert_contains(&text, "const NAME: &'static str = \"tick\";");
        assert_contains(&text, "const MAX_RETRIES: u32 = 0u32;");
        assert_contains(&text, "const PRIORITY: u8 = 7u8;");
        assert_contains(&text, "type Args = ();");
        assert_contains(&text, "type Output = ();");
        assert_contains(&text, "Self::__run().await; ::core::result::Result::Ok(())");
        assert_contains(
            &text,
            "fn new() -> crate::sched::__private::TaskCall<tick_fn>",
        );
    }

    /// One parameter makes a 1-tuple, and the context is passed to the body but not in `Args`.
    #[test]
    fn expansion_one_param_with_context() {
        let file = expand_file(
            TokenStream::new(),
            quote!(
                async fn f(ctx: TaskContext, mut n: u32) -> Result<u32, MyErr> {
                    Ok(n)
                }
            ),
        );
        let text = norm(&file);
        assert_contains(&text, "type Args = (u32,);");
        assert_contains(&text, "type Output = u32;");
        // `mut` is the body's business; `new` does not repeat it.
        assert_contains(&text, "fn new(n: u32)");
        assert_contains(&text, "async fn __run(ctx: TaskContext, mut n: u32)");
        assert_contains(&text, "let (__arg0,) = __args;");
        assert_contains(&text, "Self::__run(__ctx, __arg0).await");
    }

    /// A raw identifier's name has no `r#`.
    #[test]
    fn raw_identifier_name() {
        let file = expand_file(
            TokenStream::new(),
            quote!(
                async fn r#move() {}
            ),
        );
        assert_contains(&norm(&file), "const NAME: &'static str = \"move\";");
    }

    /// On error the function comes back unchanged, followed by `compile_error!`s.
    #[test]
    fn error_keeps_function() {
        let item = quote!(
            fn send(x: u8) {}
        );
        let out = expand(quote!(queu = "x"), item.clone());
        let text = norm(&out);
        assert!(text.starts_with(&norm(&item)), "{text}");
        assert!(text.contains("compile_error"), "{text}");
        assert!(text.contains("unknown attribute key `queu`"), "{text}");
        assert!(text.contains("must be `async`"), "{text}");

        let out = norm(expand(
            TokenStream::new(),
            quote!(
                struct S;
            ),
        ));
        assert!(
            out.contains("can only be applied to an `async fn`"),
            "{out}"
        );
    }
}
