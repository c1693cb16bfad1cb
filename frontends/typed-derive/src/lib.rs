//! `#[record(tree = "...", version = N[, versioned])]`: makes a type a typed-KV record.
//!
//! On a struct or enum it adds the derives a record needs (rkyv's `Archive`, `Serialize`
//! and `Deserialize`, with bytecheck validation of the archived form, and serde's, for the
//! generic viewer) and implements `strata_typed::Record`: the tree the type lives in, its
//! schema version, whether its tree keeps released revisions, and the rkyv calls for the
//! type (written out for the concrete type, so users never meet rkyv's generic bounds).
//!
//! ```ignore
//! #[strata_typed::record(tree = "parts", version = 1, versioned)]
//! pub struct Part { pub name: String, pub stock: u32 }
//! ```

use proc_macro::TokenStream;
use quote::quote;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{parse_macro_input, DeriveInput, Expr, ExprLit, Lit, Meta, Token};

/// `#[derive(Describe)]`: the type's description for stored schemas (see
/// `strata_typed::schema`), on a struct or enum that also derives rkyv's `Archive`.
/// [`record`] derives it for a record type; derive it for the types a record's fields use,
/// so the generic viewer can show and edit them.
#[proc_macro_derive(Describe)]
pub fn describe(item: TokenStream) -> TokenStream {
    let input = parse_macro_input!(item as DeriveInput);
    match describe_impl(&input) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// Whether an `#[rkyv(...)]` attribute among `attrs` names one of `words`.
fn rkyv_says(attrs: &[syn::Attribute], words: &[&str]) -> bool {
    fn has(tokens: proc_macro2::TokenStream, words: &[&str]) -> bool {
        tokens.into_iter().any(|t| match t {
            proc_macro2::TokenTree::Ident(i) => words.iter().any(|w| i == w),
            proc_macro2::TokenTree::Group(g) => has(g.stream(), words),
            _ => false,
        })
    }
    attrs.iter().any(|a| {
        a.path().is_ident("rkyv")
            && matches!(&a.meta, Meta::List(l) if has(l.tokens.clone(), words))
    })
}

fn describe_impl(input: &DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &input.generics,
            "Describe is derived for types without generic parameters",
        ));
    }
    let name = &input.ident;
    let name_str = name.to_string();
    let schema = quote! { ::strata_typed::schema };
    let archived = quote! { ::strata_typed::rkyv::Archived<Self> };
    let shape_of =
        |ty: &syn::Type| quote! { (&&#schema::__private::Probe::<#ty>::new()).shape(defs) };
    let style_of = |fields: &syn::Fields| match fields {
        syn::Fields::Named(_) => quote! { #schema::Style::Named },
        syn::Fields::Unnamed(_) => quote! { #schema::Style::Tuple },
        syn::Fields::Unit => quote! { #schema::Style::Unit },
    };
    let field_attrs = |fields: &syn::Fields| fields.iter().any(|f| rkyv_says(&f.attrs, &["with"]));
    let wrapped = rkyv_says(&input.attrs, &["as", "remote"])
        || match &input.data {
            syn::Data::Struct(s) => field_attrs(&s.fields),
            syn::Data::Enum(e) => e.variants.iter().any(|v| field_attrs(&v.fields)),
            syn::Data::Union(_) => true,
        };
    let draft = if wrapped {
        quote! {
            #schema::Draft::Opaque {
                name: ::std::string::String::from(#name_str),
                why: ::std::string::String::from(
                    "it is archived through a wrapper (`#[rkyv(with = ...)]`, `as` or `remote`)",
                ),
            }
        }
    } else {
        match &input.data {
            syn::Data::Struct(s) => {
                let style = style_of(&s.fields);
                let fields = s.fields.iter().enumerate().map(|(i, f)| {
                    let (label, member) = match &f.ident {
                        Some(id) => (id.to_string(), quote! { #id }),
                        None => {
                            let idx = syn::Index::from(i);
                            (i.to_string(), quote! { #idx })
                        }
                    };
                    let shape = shape_of(&f.ty);
                    quote! {
                        (
                            ::std::string::String::from(#label),
                            #shape,
                            ::std::option::Option::Some(::core::mem::offset_of!(#archived, #member)),
                        )
                    }
                });
                quote! {
                    #schema::Draft::Struct {
                        name: ::std::string::String::from(#name_str),
                        style: #style,
                        fields: ::std::vec![#(#fields),*],
                    }
                }
            }
            syn::Data::Enum(e) => {
                let variants = e.variants.iter().map(|v| {
                    let vname = v.ident.to_string();
                    let style = style_of(&v.fields);
                    let set_tag = v
                        .discriminant
                        .as_ref()
                        .map(|(_, expr)| quote! { tag = (#expr) as u8; });
                    let fields = v.fields.iter().enumerate().map(|(i, f)| {
                        let label = f
                            .ident
                            .as_ref()
                            .map_or_else(|| i.to_string(), ToString::to_string);
                        let shape = shape_of(&f.ty);
                        quote! {
                            #schema::Field { name: ::std::string::String::from(#label), shape: #shape }
                        }
                    });
                    quote! {
                        #set_tag
                        variants.push(#schema::Variant {
                            name: ::std::string::String::from(#vname),
                            tag,
                            style: #style,
                            fields: ::std::vec![#(#fields),*],
                        });
                        tag = tag.wrapping_add(1);
                    }
                });
                quote! {{
                    let mut tag: u8 = 0;
                    let mut variants = ::std::vec::Vec::new();
                    #(#variants)*
                    let _ = tag;
                    #schema::Draft::Enum {
                        name: ::std::string::String::from(#name_str),
                        variants,
                    }
                }}
            }
            syn::Data::Union(_) => unreachable!("unions are opaque"),
        }
    };
    Ok(quote! {
        impl #schema::Describe for #name {
            #[allow(unused_imports, unused_assignments, unused_mut, clippy::needless_borrow)]
            fn describe(defs: &mut #schema::Defs) -> #schema::Shape {
                use #schema::__private::{ViaDescribe as _, ViaOpaque as _};
                defs.define::<Self, #archived>(|defs| #draft)
            }
        }
    })
}

/// `#[field_type]`: the derives a type used inside records needs (rkyv's, with bytecheck
/// validation, serde's and [`Describe`]), as [`record`] gives a record type.
///
/// ```ignore
/// #[strata_typed::field_type]
/// pub enum Place { Shelf(u16), Bin { row: u8, col: u8 } }
/// ```
#[proc_macro_attribute]
pub fn field_type(args: TokenStream, item: TokenStream) -> TokenStream {
    if !args.is_empty() {
        let args = proc_macro2::TokenStream::from(args);
        return syn::Error::new_spanned(args, "#[field_type] takes no arguments")
            .to_compile_error()
            .into();
    }
    let input = parse_macro_input!(item as DeriveInput);
    with_derives(&input).into()
}

/// `input` with the derives every stored type has.
fn with_derives(input: &DeriveInput) -> proc_macro2::TokenStream {
    quote! {
        #[derive(
            ::strata_typed::rkyv::Archive,
            ::strata_typed::rkyv::Serialize,
            ::strata_typed::rkyv::Deserialize,
            ::strata_typed::serde::Serialize,
            ::strata_typed::serde::Deserialize,
            ::strata_typed::Describe,
        )]
        #[rkyv(crate = ::strata_typed::rkyv)]
        #[serde(crate = "::strata_typed::serde")]
        #input
    }
}

#[proc_macro_attribute]
pub fn record(args: TokenStream, item: TokenStream) -> TokenStream {
    let input = parse_macro_input!(item as DeriveInput);
    match expand(args.into(), input) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

struct Args {
    tree: String,
    version: u32,
    versioned: bool,
    /// The record type of the previous schema version, which this one is made `From`.
    previous: Option<syn::Path>,
    /// Records at this version are also stored in the previous version's form (made
    /// `From<&Self>`), which code at the previous version reads.
    compatible: bool,
    /// `From<Previous>` is declared field by field (`#[upgrade(...)]` on the fields) and
    /// generated, and stored in the schema, so tools without the types can migrate.
    upgrade: bool,
}

fn parse_args(args: proc_macro2::TokenStream) -> syn::Result<Args> {
    let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(args.clone())?;
    let mut tree = None;
    let mut version = None;
    let mut versioned = false;
    let mut previous = None;
    let mut compatible = false;
    let mut upgrade = false;
    for meta in metas {
        match &meta {
            Meta::Path(p) if p.is_ident("versioned") => versioned = true,
            Meta::Path(p) if p.is_ident("compatible") => compatible = true,
            Meta::Path(p) if p.is_ident("upgrade") => upgrade = true,
            Meta::NameValue(nv) if nv.path.is_ident("tree") => match &nv.value {
                Expr::Lit(ExprLit {
                    lit: Lit::Str(s), ..
                }) => tree = Some(s.value()),
                other => return Err(syn::Error::new_spanned(other, "tree = \"name\"")),
            },
            Meta::NameValue(nv) if nv.path.is_ident("version") => match &nv.value {
                Expr::Lit(ExprLit {
                    lit: Lit::Int(i), ..
                }) => version = Some(i.base10_parse::<u32>()?),
                other => return Err(syn::Error::new_spanned(other, "version = <integer>")),
            },
            Meta::NameValue(nv) if nv.path.is_ident("previous") => match &nv.value {
                Expr::Path(p) => previous = Some(p.path.clone()),
                other => return Err(syn::Error::new_spanned(other, "previous = path::To::Type")),
            },
            other => {
                return Err(syn::Error::new_spanned(
                    other,
                    "expected `tree = \"name\"`, `version = N`, `versioned`, `previous = Type`, `compatible` or `upgrade`",
                ))
            }
        }
    }
    let tree = tree.ok_or_else(|| syn::Error::new_spanned(&args, "missing `tree = \"name\"`"))?;
    if tree.is_empty() || tree.bytes().any(|b| b == 0) {
        return Err(syn::Error::new_spanned(
            &args,
            "a tree name is not empty and has no NUL byte",
        ));
    }
    if compatible && previous.is_none() {
        return Err(syn::Error::new_spanned(
            &args,
            "`compatible` needs `previous = Type`: the version whose code reads these records",
        ));
    }
    if upgrade && previous.is_none() {
        return Err(syn::Error::new_spanned(
            &args,
            "`upgrade` needs `previous = Type`: the version it upgrades",
        ));
    }
    Ok(Args {
        tree,
        version: version.unwrap_or(1),
        versioned,
        previous,
        compatible,
        upgrade,
    })
}

/// Where a field of an upgraded version takes its value from.
enum FieldSource {
    /// The previous version's field of this name.
    Carried(syn::Ident),
    /// `Default::default()`.
    Default,
}

/// Take the `#[upgrade(...)]` attributes off the fields: for `upgrade`, each named field
/// with its type and source; an attribute anywhere without `upgrade` is an error.
fn upgrade_fields(
    input: &mut DeriveInput,
    upgrade: bool,
) -> syn::Result<Vec<(syn::Ident, syn::Type, FieldSource)>> {
    let span = input.ident.clone();
    let fields = match &mut input.data {
        syn::Data::Struct(s) => Some(&mut s.fields),
        _ => None,
    };
    let Some(fields) = fields else {
        if upgrade {
            return Err(syn::Error::new_spanned(
                span,
                "`upgrade` is for structs with named fields",
            ));
        }
        return Ok(Vec::new());
    };
    if upgrade && !matches!(fields, syn::Fields::Named(_)) {
        return Err(syn::Error::new_spanned(
            span,
            "`upgrade` is for structs with named fields",
        ));
    }
    let mut out = Vec::new();
    for field in fields.iter_mut() {
        let mut source = None;
        let mut kept = Vec::new();
        for attr in std::mem::take(&mut field.attrs) {
            if !attr.path().is_ident("upgrade") {
                kept.push(attr);
                continue;
            }
            if !upgrade {
                return Err(syn::Error::new_spanned(
                    attr,
                    "`#[upgrade(...)]` on a field needs `upgrade` in `#[record(...)]`",
                ));
            }
            let meta: Meta = attr.parse_args()?;
            source = Some(match &meta {
                Meta::Path(p) if p.is_ident("default") => FieldSource::Default,
                Meta::NameValue(nv) if nv.path.is_ident("from") => match &nv.value {
                    Expr::Path(p) if p.path.get_ident().is_some() => {
                        FieldSource::Carried(p.path.get_ident().cloned().expect("an ident"))
                    }
                    Expr::Lit(ExprLit {
                        lit: Lit::Str(s), ..
                    }) => FieldSource::Carried(s.parse()?),
                    other => return Err(syn::Error::new_spanned(other, "from = old_field_name")),
                },
                other => {
                    return Err(syn::Error::new_spanned(
                        other,
                        "expected `#[upgrade(default)]` or `#[upgrade(from = old_field_name)]`",
                    ))
                }
            });
        }
        field.attrs = kept;
        if let Some(ident) = field.ident.clone() {
            let source = source.unwrap_or_else(|| FieldSource::Carried(ident.clone()));
            out.push((ident, field.ty.clone(), source));
        }
    }
    Ok(out)
}

fn expand(
    args: proc_macro2::TokenStream,
    mut input: DeriveInput,
) -> syn::Result<proc_macro2::TokenStream> {
    let Args {
        tree,
        version,
        versioned,
        previous,
        compatible,
        upgrade,
    } = parse_args(args)?;
    let upgraded = upgrade_fields(&mut input, upgrade)?;
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &input.generics,
            "a record type has no generic parameters",
        ));
    }
    let name = &input.ident;
    // Reading an older version: through the previous type, then `From` it.
    let read_older = match &previous {
        Some(prev) => quote! {
            fn read_version(
                stored: u32,
                archive: &[u8],
            ) -> ::std::option::Option<
                ::std::result::Result<Self, ::strata_typed::rkyv::rancor::Error>,
            > {
                const _: () = assert!(
                    <#prev as ::strata_typed::Record>::SCHEMA_VERSION < #version,
                    "the previous version's schema version must be lower",
                );
                if stored == #version {
                    return ::std::option::Option::Some(
                        <Self as ::strata_typed::Record>::access(archive)
                            .and_then(<Self as ::strata_typed::Record>::from_archived),
                    );
                }
                if stored > #version {
                    return ::std::option::Option::None;
                }
                <#prev as ::strata_typed::Record>::read_version(stored, archive)
                    .map(|r| r.map(<Self as ::std::convert::From<#prev>>::from))
            }
        },
        None => quote! {},
    };
    // The stored schema names the previous version, and with `upgrade` how a record of it
    // becomes one of this version; the same declaration generates `From<Previous>`.
    let (schema, from_previous) = match &previous {
        Some(prev) => {
            let fields: Vec<_> = upgraded
                .iter()
                .map(|(field, ty, source)| {
                    let label = field.to_string();
                    let (value, entry) = match source {
                        FieldSource::Carried(from) => {
                            let from_label = from.to_string();
                            (
                                quote! { old.#from },
                                quote! {
                                    ::strata_typed::schema::Source::Carried {
                                        from: ::std::string::String::from(#from_label),
                                    }
                                },
                            )
                        }
                        FieldSource::Default => (
                            quote! { ::std::default::Default::default() },
                            quote! {
                                ::strata_typed::schema::Source::Default {
                                    value: s.field_json(
                                        #label,
                                        &::strata_typed::rkyv::to_bytes::<
                                            ::strata_typed::rkyv::rancor::Error,
                                        >(&<#ty as ::std::default::Default>::default())
                                        .map(|b| b.to_vec())
                                        .unwrap_or_default(),
                                    ),
                                }
                            },
                        ),
                    };
                    (
                        quote! { #field: #value },
                        quote! {
                            ::strata_typed::schema::Upgraded {
                                name: ::std::string::String::from(#label),
                                source: #entry,
                            }
                        },
                    )
                })
                .collect();
            let (inits, entries): (Vec<_>, Vec<_>) = fields.into_iter().unzip();
            let set_upgrade = upgrade.then(|| {
                quote! {
                    let upgrade = ::std::vec![#(#entries),*];
                    s.upgrade = ::std::option::Option::Some(upgrade);
                }
            });
            let from_previous = upgrade.then(|| {
                quote! {
                    impl ::std::convert::From<#prev> for #name {
                        fn from(old: #prev) -> Self {
                            #name { #(#inits),* }
                        }
                    }
                }
            });
            (
                quote! {
                    fn schema() -> ::strata_typed::Schema {
                        let mut s = ::strata_typed::Schema::of::<Self>();
                        s.previous = ::std::option::Option::Some(
                            <#prev as ::strata_typed::Record>::SCHEMA_VERSION,
                        );
                        s.compatible = #compatible;
                        #set_upgrade
                        s
                    }
                },
                from_previous,
            )
        }
        None => (quote! {}, None),
    };
    // Declared compatible: also archived as the previous version.
    let compat = match (&previous, compatible) {
        (Some(prev), true) => quote! {
            fn compat_archive(
                &self,
            ) -> ::std::option::Option<
                ::std::result::Result<
                    (u32, ::strata_typed::rkyv::util::AlignedVec),
                    ::strata_typed::rkyv::rancor::Error,
                >,
            > {
                let older: #prev = <#prev as ::std::convert::From<&Self>>::from(self);
                ::std::option::Option::Some(
                    <#prev as ::strata_typed::Record>::to_archive(&older)
                        .map(|a| (<#prev as ::strata_typed::Record>::SCHEMA_VERSION, a)),
                )
            }
        },
        _ => quote! {},
    };
    let derived = with_derives(&input);
    Ok(quote! {
        #derived

        impl ::strata_typed::Record for #name {
            const TREE: &'static str = #tree;
            const SCHEMA_VERSION: u32 = #version;
            const VERSIONED: bool = #versioned;
            type Archived = ::strata_typed::rkyv::Archived<Self>;

            fn to_archive(
                &self,
            ) -> ::std::result::Result<
                ::strata_typed::rkyv::util::AlignedVec,
                ::strata_typed::rkyv::rancor::Error,
            > {
                ::strata_typed::rkyv::to_bytes::<::strata_typed::rkyv::rancor::Error>(self)
            }

            fn access(
                bytes: &[u8],
            ) -> ::std::result::Result<&Self::Archived, ::strata_typed::rkyv::rancor::Error> {
                ::strata_typed::rkyv::access::<Self::Archived, ::strata_typed::rkyv::rancor::Error>(
                    bytes,
                )
            }

            fn from_archived(
                archived: &Self::Archived,
            ) -> ::std::result::Result<Self, ::strata_typed::rkyv::rancor::Error> {
                ::strata_typed::rkyv::deserialize::<Self, ::strata_typed::rkyv::rancor::Error>(
                    archived,
                )
            }

            #read_older
            #compat
            #schema
        }

        #from_previous
    })
}
