//! Kelvin's API key: a random value in the Secret `<vizier>-api-key`, created once.
//!
//! Create-if-absent, with nothing but `create`: the operator posts the Secret and takes
//! `409 AlreadyExists` as "there is one". It never reads a Secret, so its RBAC has no
//! `get` on secrets (which could not be narrowed by name: the names follow the Viziers',
//! in any namespace) and it cannot read other Secrets of the cluster. The cost: it
//! cannot check what an existing Secret holds; a Secret without `key` shows up as
//! Kelvin's `CreateContainerConfigError`. A user may create the Secret before the Vizier
//! to choose the key; the operator then leaves it (and its lack of an owner) alone.

use std::io::Read;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use px_crds::Vizier;

use crate::context::Context;
use crate::desired;
use crate::error::Error;

/// Bytes of randomness in a key: 256 bits.
const KEY_BYTES: usize = 32;

/// A new key: 32 random bytes from the kernel's CSPRNG, hex-encoded (64 characters, safe
/// in gRPC metadata and on a command line). `/dev/urandom` rather than a crate: it never
/// blocks once the kernel's pool is seeded, and the operator runs on Linux only.
fn generate() -> Result<String, Error> {
    let mut bytes = [0u8; KEY_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|source| Error::RandomKey { source })?;
    Ok(hex(&bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Makes sure the Vizier's API-key Secret exists in `ns`: creates it with a new key if
/// it does not, and never touches one that does (so the key is never rotated under the
/// clients that hold it). Publishes `APIKeyCreated` when it creates one. The key itself
/// is never logged nor put in an event.
pub(crate) async fn ensure(vz: &Vizier, ns: &str, ctx: &Context) -> Result<(), Error> {
    // A key every reconcile: knowing whether one is needed would take a read (see the
    // module docs), and 32 random bytes are cheap. An unused one is dropped unseen.
    let secret = desired::api_key_secret(vz, &generate()?)?;
    create_once(vz, ns, ctx, secret, "APIKeyCreated", "Kelvin's API key").await?;
    ensure_pem_token(vz, ns, ctx).await
}

/// Makes sure the namespace's `px-pem-token` Secret holds a token for this Vizier (data
/// key: its name), adding it, and the Vizier as an owner, by server-side apply under the
/// Vizier's own field manager when it does not: the other Viziers' tokens stay as they
/// are. The operator reads this Secret back (and only this one, by name) to call the
/// PEMs.
async fn ensure_pem_token(vz: &Vizier, ns: &str, ctx: &Context) -> Result<(), Error> {
    let name = vz.metadata.name.clone().unwrap_or_default();
    if pem_token(ctx, ns, &name).await?.is_some() {
        return Ok(());
    }
    let secret = desired::pem_token_secret(vz, &generate()?)?;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    api.patch(
        desired::PEM_TOKEN_SECRET,
        &PatchParams::apply(&desired::shared_secret_manager(&name)),
        &Patch::Apply(&secret),
    )
    .await
    .map_err(|source| Error::WriteSecret {
        name: desired::PEM_TOKEN_SECRET.to_string(),
        source,
    })?;
    ctx.publish(
        vz,
        EventType::Normal,
        "PEMTokenCreated",
        format!(
            "added the PEMs' service token to Secret {} (data key `{name}`)",
            desired::PEM_TOKEN_SECRET
        ),
    )
    .await;
    Ok(())
}

/// The service token of Vizier `vizier`'s PEMs in namespace `ns`, if there is one.
pub(crate) async fn pem_token(
    ctx: &Context,
    ns: &str,
    vizier: &str,
) -> Result<Option<String>, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let secret = api
        .get_opt(desired::PEM_TOKEN_SECRET)
        .await
        .map_err(|source| Error::Read {
            what: "the PEMs' token Secret",
            source,
        })?;
    Ok(secret
        .and_then(|s| s.data)
        .and_then(|d| d.get(vizier).cloned())
        .and_then(|v| String::from_utf8(v.0).ok())
        .filter(|t| !t.is_empty()))
}

/// Creates `secret` unless it exists; publishes `reason` when it does create it.
async fn create_once(
    vz: &Vizier,
    ns: &str,
    ctx: &Context,
    secret: Secret,
    reason: &str,
    what: &str,
) -> Result<(), Error> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            ctx.publish(
                vz,
                EventType::Normal,
                reason,
                format!("created Secret {name} with {what} (data key `key`)"),
            )
            .await;
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(source) => Err(Error::WriteSecret { name, source }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn keys_are_64_hex_characters_and_differ() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.len(), 2 * KEY_BYTES);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_ne!(a, b);
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
    }
}
