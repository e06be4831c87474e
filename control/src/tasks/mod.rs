//! Work that runs beside the requests: snapshot building and the change
//! stream ([`publish`]), and the abuse sweeps that walk many links in many
//! transactions ([`abuse`]). Each loop ends when shutdown begins.

pub mod abuse;
pub mod acme;
pub mod publish;
pub mod webhooks;
