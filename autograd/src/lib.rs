//! Reverse-mode automatic differentiation (in progress: see the README).
