//! Rate limits on requests that change state: a token bucket per client
//! address and one per signing key. A client over its rate gets `429` with
//! `Retry-After`; nothing it sent is applied.

use crate::server::error;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use parking_lot::Mutex;
use splitup_protocol::Pubkey;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::Instant;

/// A sustained rate and a burst.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub per_sec: u32,
    pub burst: u32,
}

/// The limits a ledger applies.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rates {
    pub per_address: Rate,
    pub per_key: Rate,
}

impl Default for Rates {
    fn default() -> Rates {
        Rates {
            per_address: Rate {
                per_sec: 1000,
                burst: 2000,
            },
            per_key: Rate {
                per_sec: 100,
                burst: 400,
            },
        }
    }
}

/// Buckets kept before idle ones (full again) are forgotten.
const BUCKETS_MAX: usize = 100_000;

struct Buckets<K> {
    rate: Rate,
    map: Mutex<HashMap<K, (f64, Instant)>>,
}

impl<K: Hash + Eq + Copy> Buckets<K> {
    fn new(rate: Rate) -> Buckets<K> {
        Buckets {
            rate,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `k`; `Err(seconds)` until one is available.
    fn take(&self, k: K, now: Instant) -> Result<(), f64> {
        let (rate, burst) = (self.rate.per_sec.max(1) as f64, self.rate.burst.max(1) as f64);
        let mut map = self.map.lock();
        if map.len() >= BUCKETS_MAX && !map.contains_key(&k) {
            // Forget buckets that have refilled: they hold no information.
            map.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * rate < burst);
        }
        let (tokens, at) = map.entry(k).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err((1.0 - *tokens) / rate)
        }
    }
}

pub struct Limits {
    addresses: Buckets<IpAddr>,
    keys: Buckets<Pubkey>,
}

impl Limits {
    pub fn new(r: Rates) -> Limits {
        Limits {
            addresses: Buckets::new(r.per_address),
            keys: Buckets::new(r.per_key),
        }
    }

    /// `None` when the request may proceed; else the `429` answer.
    pub fn check(&self, addr: Option<IpAddr>, key: Option<Pubkey>) -> Option<Response> {
        self.check_at(addr, key, Instant::now())
    }

    fn check_at(&self, addr: Option<IpAddr>, key: Option<Pubkey>, now: Instant) -> Option<Response> {
        let refused = |who: String, wait: f64| {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                429,
                format!("rate limited: {who} is over its rate; retry in {wait:.2} s"),
            );
            let secs = wait.ceil().max(1.0) as u64;
            r.headers_mut().insert("retry-after", HeaderValue::from(secs));
            r
        };
        if let Some(a) = addr {
            if let Err(w) = self.addresses.take(a, now) {
                return Some(refused(format!("address {a}"), w));
            }
        }
        if let Some(k) = key {
            if let Err(w) = self.keys.take(k, now) {
                return Some(refused(format!("key {}", k.short()), w));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate_then_refill() {
        let l = Limits::new(Rates {
            per_address: Rate { per_sec: 10, burst: 5 },
            per_key: Rate {
                per_sec: 1000,
                burst: 1000,
            },
        });
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(l.check_at(Some(ip), None, t0).is_none());
        }
        let r = l.check_at(Some(ip), None, t0).expect("over the burst");
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(r.headers().contains_key("retry-after"));
        // Another address is not affected; after 0.1 s one token is back.
        assert!(l.check_at(Some(other), None, t0).is_none());
        assert!(l.check_at(Some(ip), None, t0 + Duration::from_millis(110)).is_none());
        assert!(l.check_at(Some(ip), None, t0 + Duration::from_millis(110)).is_some());
    }

    #[test]
    fn keys_are_limited_across_addresses() {
        let l = Limits::new(Rates {
            per_address: Rate {
                per_sec: 1000,
                burst: 1000,
            },
            per_key: Rate { per_sec: 1, burst: 2 },
        });
        let k = Pubkey([7; 32]);
        let t0 = Instant::now();
        assert!(l.check_at(Some("10.0.0.1".parse().unwrap()), Some(k), t0).is_none());
        assert!(l.check_at(Some("10.0.0.2".parse().unwrap()), Some(k), t0).is_none());
        assert!(l.check_at(Some("10.0.0.3".parse().unwrap()), Some(k), t0).is_some());
    }
}
