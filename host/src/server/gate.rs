//! Who sees which jobs in the web UI and `/metrics` of `sluice serve`: the registry's
//! tokens. A tenant's token shows that tenant's jobs only; the admin token shows every
//! tenant's, which is what a Prometheus scraping the whole server holds
//! (`credentials_file: DATA/admin-token`).

use std::sync::Arc;

use super::registry::{Caller, Registry};
use super::tokens;

/// The server's [`Gate`](crate::ui::Gate): a token the registry knows.
pub struct RegistryGate(pub Arc<Registry>);

impl crate::ui::Gate for RegistryGate {
    fn admit(&self, token: Option<&str>) -> Result<Option<String>, ()> {
        let token = token.ok_or(())?;
        match self.0.caller(&tokens::hash(token.trim())) {
            Ok(Some(Caller::Admin)) => Ok(None),
            Ok(Some(Caller::Tenant(tenant))) => Ok(Some(tenant)),
            Ok(None) => Err(()),
            Err(error) => {
                tracing::error!("cannot look a token up: {error:#}");
                Err(())
            }
        }
    }
}
