//! This machine's canonical host name: what the proxy advertises when
//! `listen.address` binds all interfaces and no `listen.advertised_address`
//! is set.
//!
//! Kafka does the same for a listener without a host: `advertised.listeners`
//! defaults to `listeners`, and a blank listener host (one that binds all
//! interfaces) is replaced by `InetAddress.getLocalHost().getCanonicalHostName()`
//! (apache/kafka, metadata/src/main/java/org/apache/kafka/metadata/
//! ListenerInfo.java, `withWildcardHostnamesResolved`; before KRaft,
//! core/src/main/scala/kafka/server/KafkaServer.scala). Kafka refuses a
//! literal `0.0.0.0` as an advertised host ("advertised.listeners cannot use
//! the nonroutable meta-address 0.0.0.0", KafkaConfig.scala); the proxy
//! treats `0.0.0.0` and `::` like Kafka's blank host, as the user's guide
//! writes its listeners that way.
//!
//! The name is `gethostname(2)` canonicalised by `getaddrinfo(3)` with
//! `AI_CANONNAME` (as `hostname --fqdn` does), falling back to the plain
//! host name when the lookup fails. Java's `getCanonicalHostName` takes a
//! reverse lookup of the host's address instead; where the two differ, the
//! forward name is the one the operator named the machine by.

use std::ffi::{CStr, CString};
use std::io;
use std::ptr;

/// The canonical host name, or why there is none.
pub fn canonical_host_name() -> Result<String, String> {
    canonical_or_plain(local_host_name()?, canonical_name)
}

/// `host` canonicalised by `canonicalise`, or `host` itself when it has no
/// canonical name.
fn canonical_or_plain(host: String, canonicalise: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    if host.is_empty() {
        return Err("the machine's host name is empty".to_string());
    }
    Ok(canonicalise(&host).filter(|c| !c.is_empty()).unwrap_or(host))
}

/// `gethostname(2)`.
fn local_host_name() -> Result<String, String> {
    // POSIX allows up to 255 bytes (HOST_NAME_MAX is 64 on Linux).
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is writable for its whole length, which is passed.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return Err(format!("gethostname failed: {}", io::Error::last_os_error()));
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..len].to_vec()).map_err(|_| "the machine's host name is not UTF-8".to_string())
}

/// `getaddrinfo(host, AI_CANONNAME)`'s canonical name; `None` when the
/// name does not resolve.
fn canonical_name(host: &str) -> Option<String> {
    let c_host = CString::new(host).ok()?;
    // SAFETY: an all-zero addrinfo is the documented "no hints" value.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_flags = libc::AI_CANONNAME;
    hints.ai_family = libc::AF_UNSPEC;
    hints.ai_socktype = libc::SOCK_STREAM;
    let mut found: *mut libc::addrinfo = ptr::null_mut();
    // SAFETY: valid C strings and hints; `found` is freed below exactly once.
    let rc = unsafe { libc::getaddrinfo(c_host.as_ptr(), ptr::null(), &hints, &mut found) };
    if rc != 0 || found.is_null() {
        return None;
    }
    // SAFETY: getaddrinfo succeeded, so `found` points at a valid list whose
    // first entry carries ai_canonname (NUL-terminated) when AI_CANONNAME is set.
    let name = unsafe {
        let canon = (*found).ai_canonname;
        let name = (!canon.is_null()).then(|| CStr::from_ptr(canon).to_string_lossy().into_owned());
        libc::freeaddrinfo(found);
        name
    };
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falls_back_to_the_plain_name() {
        let none = |_: &str| None;
        assert_eq!(canonical_or_plain("kpr-host".into(), none), Ok("kpr-host".into()));
        let empty = |_: &str| Some(String::new());
        assert_eq!(canonical_or_plain("kpr-host".into(), empty), Ok("kpr-host".into()));
        let fqdn = |h: &str| Some(format!("{h}.example"));
        assert_eq!(canonical_or_plain("kpr-host".into(), fqdn), Ok("kpr-host.example".into()));
        assert_eq!(
            canonical_or_plain(String::new(), fqdn),
            Err("the machine's host name is empty".into())
        );
    }

    #[test]
    fn localhost_is_canonical_and_the_machine_has_a_name() {
        // /etc/hosts names localhost on every machine the tests run on; no DNS.
        assert_eq!(canonical_name("localhost").as_deref(), Some("localhost"));
        let plain = local_host_name().unwrap();
        assert!(!plain.is_empty());
        let canonical = canonical_host_name().unwrap();
        assert!(!canonical.is_empty() && !canonical.contains(char::is_whitespace), "{canonical:?}");
    }
}
