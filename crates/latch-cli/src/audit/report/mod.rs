//! `--report FILE`: one self-contained HTML page an auditor can open anywhere, offline.
//!
//! Contract: two steps. [`Aggregator`] folds matched records into a
//! [`Report`], the page's model, in memory bounded by the report's caps and with no HTML in
//! it; [`render`] turns a report into the page: inline CSS, inline JS, an SVG timeline drawn by
//! the script from an embedded JSON block, no external reference of any kind, every string
//! from a record escaped by the template engine.

mod aggregate;
mod render;

pub use aggregate::{Aggregator, hash64};
pub use render::{Source, render};
