//! `payproxy plugin …`: the plugin author's loop. `new` scaffolds a plugin crate for a
//! role; `test` runs its golden fixtures through the real host.

pub mod new;
pub mod test;
