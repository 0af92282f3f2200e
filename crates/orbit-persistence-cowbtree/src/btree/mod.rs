//! The copy-on-write B+tree: lookups and range scans for readers, inserts and removals for
//! the writer.
//!
//! A tree is a [`Child`]: either a page of the last checkpoint ([`Child::Page`], read in place)
//! or a node changed since ([`Child::Mem`], an `Arc<Node>`). Readers hold a root and never see a
//! change: the writer changes nodes through `Arc::make_mut`, which copies a node that a
//! published root still shares, and turns a page into a node ("materializes" it) before
//! changing it, recording the page as *retired* so a checkpoint can free it. The checkpoint
//! writes every node back to pages ([`crate::checkpoint`]).
//!
//! Nodes split when their page image would not fit a page, and merge with a neighbour when they
//! fall below a quarter page and the two fit one page: deleting most leases shrinks the tree.
//!
//! | module | concept |
//! |---|---|
//! | [`node`] | the nodes in memory and their page-image sizes |
//! | [`read`] | lookups and range scans |
//! | [`write`](mod@write) | inserts and removals, splits and merges |

pub mod node;
pub mod read;
pub mod write;

pub use node::{Branch, Child, Keys, Leaf, Node};
pub use read::{get, scan};
pub use write::{WriteCtx, insert, load_node, remove};
