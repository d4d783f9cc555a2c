//! The `optim` crate of anneal. Not yet implemented: it contains no public items yet (see the README's roadmap).
