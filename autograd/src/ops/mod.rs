//! Differentiable ops on [`Var`](crate::Var), one family per file: each
//! forward sits beside its backward rule.

mod conv;
mod elementwise;
mod matmul;
mod reduce;
mod select;
mod shape;
