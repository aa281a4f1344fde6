//! Causeway's provisioner: plans, deploys, inspects and destroys Causeway
//! edge roles on a cloud. `--cloud local` builds the whole topology out of
//! network namespaces on this machine and is the basis of the end-to-end
//! tests, which use [`local`] as a library. `--cloud aws` lives in [`aws`].

pub mod aws;
pub mod cli;
pub mod cloud;
pub mod console;
pub mod image;
pub mod local;
pub mod name;
pub mod role;
