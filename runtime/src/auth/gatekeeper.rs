//! The gatekeeper: the NATS auth-callout service that admits outside miners by their
//! sr25519 hotkey.
//!
//! nats-server sends every connection that is not a static operator user to
//! `$SYS.REQ.USER.AUTH` as an authorization-request JWT signed by the server's own nkey. The
//! gatekeeper verifies that JWT (ed25519 signature under its issuer, issuer = the server id
//! it names, audience, type, expiry), then the miner's proof: user = an SS58 address,
//! password = hex sr25519 signature by that address over
//! [`login_challenge`]`(login domain, nonce)` (the login domain is the network's pinned owner address), where the nonce is the one the server issued to
//! this very connection (reported in `client_info.nonce`). It answers with an
//! authorization-response JWT (signed by the issuer account key of the server config) that
//! carries a user JWT with exactly that miner's permissions ([`BusIdentity::Miner`]), or an
//! error. Hotkeys never seen before are admitted at most `max_new_miners_per_minute`
//! (token bucket), so a flood of fresh keys cannot exhaust the server.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actors::metrics::Metrics;
use futures::StreamExt;
use messages::bus_permissions::{login_challenge, BusIdentity, AUTH_CALLOUT_SUBJECT};
use messages::Ss58Address;
use nkeys::KeyPair;
use serde_json::{json, Value};

use super::jwt;
use super::setup::ACCOUNT;

/// Audience of the server's authorization requests.
const REQUEST_AUDIENCE: &str = "nats-authorization-request";
/// Queue group: several gatekeepers share the requests.
const QUEUE: &str = "grail-gatekeepers";
/// Hotkeys remembered as admitted (beyond this, returning miners count as new again).
const MAX_REMEMBERED: usize = 200_000;
/// (address, reason) pairs logged once (beyond this, refusals are only counted).
const MAX_LOGGED: usize = 20_000;
/// Subscriptions an outside miner may hold.
const MINER_MAX_SUBS: i64 = 256;

#[derive(Clone, Debug)]
pub struct GatekeeperConfig {
    /// Bound into the login challenge: the pinned owner address (`auth::login_domain`).
    pub network_id: String,
    /// Never-seen hotkeys admitted per minute (also the burst).
    pub max_new_miners_per_minute: u32,
    /// Largest message a miner may publish.
    pub max_message_bytes: usize,
}

/// Why a login was refused (the `reason` label of `grail_auth_refusals_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The request JWT is unsigned, garbled or not from a server (never answered).
    BadRequest,
    /// No username: an anonymous connection.
    NoCredentials,
    BadAddress,
    /// The client sent no nonce signature, so the server did not pass the nonce on.
    NoNonce,
    BadSignature,
    RateLimited,
}

impl Refusal {
    pub const ALL: [Refusal; 6] = [
        Refusal::BadRequest,
        Refusal::NoCredentials,
        Refusal::BadAddress,
        Refusal::NoNonce,
        Refusal::BadSignature,
        Refusal::RateLimited,
    ];

    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::BadRequest => "bad_request",
            Refusal::NoCredentials => "no_credentials",
            Refusal::BadAddress => "bad_address",
            Refusal::NoNonce => "no_nonce",
            Refusal::BadSignature => "bad_signature",
            Refusal::RateLimited => "rate_limited",
        }
    }
}

struct State {
    admitted: HashSet<String>,
    logged: HashSet<(String, Refusal)>,
    tokens: f64,
    refilled: Instant,
}

pub struct Gatekeeper {
    cfg: GatekeeperConfig,
    issuer: KeyPair,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
}

/// A verified authorization request: what the answer needs.
struct Request {
    server_id: String,
    user_nkey: String,
    user: String,
    pass: String,
    nonce: String,
}

impl Gatekeeper {
    pub fn new(cfg: GatekeeperConfig, issuer: KeyPair, metrics: Arc<Metrics>) -> Self {
        let tokens = cfg.max_new_miners_per_minute as f64;
        // Every login kind and refusal reason exported from the start (zero-valued), so an
        // alert on one tells "none" from "not exported".
        for kind in ["new", "returning"] {
            metrics.auth_logins.with_label_values(&[kind]);
        }
        for refusal in Refusal::ALL {
            metrics.auth_refusals.with_label_values(&[refusal.reason()]);
        }
        Self {
            cfg,
            issuer,
            metrics,
            state: Mutex::new(State {
                admitted: HashSet::new(),
                logged: HashSet::new(),
                tokens,
                refilled: Instant::now(),
            }),
        }
    }

    /// Answer one authorization request (the raw message body). `None`: the request itself
    /// could not be verified and is not answered (the server then refuses the connection).
    pub fn answer(&self, request: &[u8]) -> Option<String> {
        let req = match parse_request(request) {
            Ok(r) => r,
            Err(detail) => {
                self.refused("-", Refusal::BadRequest, &detail);
                return None;
            }
        };
        let response = match self.check(&req) {
            Ok(new) => {
                let kind = if new { "new" } else { "returning" };
                self.metrics.auth_logins.with_label_values(&[kind]).inc();
                tracing::debug!(miner = %req.user, kind, "miner admitted to the bus");
                match self.user_jwt(&req) {
                    Ok(user_jwt) => json!({ "jwt": user_jwt }),
                    Err(e) => json!({ "error": format!("gatekeeper cannot sign: {e}") }),
                }
            }
            Err((refusal, detail)) => {
                let who = if req.user.is_empty() {
                    "-"
                } else {
                    req.user.as_str()
                };
                self.refused(who, refusal, &detail);
                json!({ "error": format!("grail gatekeeper: {}", refusal.reason()) })
            }
        };
        let mut nats = response;
        nats["type"] = json!("authorization_response");
        nats["version"] = json!(2);
        let claims = json!({ "sub": req.user_nkey, "aud": req.server_id, "nats": nats });
        match jwt::encode(claims, &self.issuer) {
            Ok(token) => Some(token),
            Err(e) => {
                tracing::error!(error = %e, "gatekeeper cannot sign its answer");
                None
            }
        }
    }

    /// The miner's proof and the admission rate; `Ok(true)` for a never-seen hotkey.
    fn check(&self, req: &Request) -> Result<bool, (Refusal, String)> {
        if req.user.is_empty() {
            return Err((Refusal::NoCredentials, "no username".into()));
        }
        let address =
            Ss58Address::parse(&req.user).map_err(|e| (Refusal::BadAddress, e.to_string()))?;
        if req.nonce.is_empty() {
            return Err((
                Refusal::NoNonce,
                "the connection carried no nonce signature (log in with actors::bus_auth::Credentials::Hotkey)".into(),
            ));
        }
        let signature: [u8; 64] = hex::decode(&req.pass)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or((
                Refusal::BadSignature,
                "password is not a 64-byte hex signature".into(),
            ))?;
        address
            .verify(
                &login_challenge(&self.cfg.network_id, req.nonce.as_bytes()),
                &signature,
            )
            .map_err(|_| {
                (
                    Refusal::BadSignature,
                    format!(
                        "signature does not verify for this connection's nonce on network {:?}",
                        self.cfg.network_id
                    ),
                )
            })?;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.admitted.contains(&req.user) {
            return Ok(false);
        }
        let per_minute = self.cfg.max_new_miners_per_minute as f64;
        let now = Instant::now();
        let elapsed = now.duration_since(state.refilled).as_secs_f64();
        state.tokens = (state.tokens + elapsed * per_minute / 60.0).min(per_minute);
        state.refilled = now;
        if state.tokens < 1.0 {
            return Err((
                Refusal::RateLimited,
                format!("more than {per_minute} new hotkeys per minute; retry later"),
            ));
        }
        state.tokens -= 1.0;
        if state.admitted.len() < MAX_REMEMBERED {
            state.admitted.insert(req.user.clone());
        }
        Ok(true)
    }

    fn user_jwt(&self, req: &Request) -> Result<String, jwt::JwtError> {
        let p = BusIdentity::Miner(req.user.clone()).permissions();
        let side = |allow: &[String], deny: &[String]| {
            if deny.is_empty() {
                json!({ "allow": allow })
            } else {
                json!({ "allow": allow, "deny": deny })
            }
        };
        let claims = json!({
            "sub": req.user_nkey,
            // Config mode: the audience places the user in this account.
            "aud": ACCOUNT,
            "name": req.user,
            "nats": {
                "pub": side(&p.publish_allow, &p.publish_deny),
                "sub": side(&p.subscribe_allow, &p.subscribe_deny),
                "subs": MINER_MAX_SUBS,
                "data": -1,
                "payload": self.cfg.max_message_bytes as i64,
                "type": "user",
                "version": 2,
            },
        });
        jwt::encode(claims, &self.issuer)
    }

    /// Count a refusal; log it once per (address, reason).
    fn refused(&self, address: &str, refusal: Refusal, detail: &str) {
        self.metrics
            .auth_refusals
            .with_label_values(&[refusal.reason()])
            .inc();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let key = (address.chars().take(64).collect::<String>(), refusal);
        if state.logged.len() < MAX_LOGGED && state.logged.insert(key) {
            tracing::warn!(address, reason = refusal.reason(), detail,
                "bus login refused (further refusals of this address for this reason are only counted)");
        }
    }

    /// Answer requests on `client` (connected as the gatekeeper) until the connection ends.
    pub async fn serve(self: Arc<Self>, client: async_nats::Client) -> anyhow::Result<()> {
        let mut requests = client
            .queue_subscribe(AUTH_CALLOUT_SUBJECT, QUEUE.to_string())
            .await
            .map_err(|e| {
                anyhow::anyhow!("gatekeeper cannot subscribe to {AUTH_CALLOUT_SUBJECT}: {e}")
            })?;
        client.flush().await?;
        tracing::info!(network = %self.cfg.network_id, "gatekeeper answering bus logins");
        while let Some(msg) = requests.next().await {
            let Some(reply) = msg.reply.clone() else {
                continue;
            };
            if let Some(answer) = self.answer(&msg.payload) {
                if let Err(e) = client.publish(reply, answer.into()).await {
                    tracing::warn!(error = %e, "gatekeeper answer not sent");
                }
            }
        }
        Ok(())
    }
}

fn parse_request(body: &[u8]) -> Result<Request, String> {
    let token = std::str::from_utf8(body).map_err(|_| "request is not UTF-8".to_string())?;
    let claims = jwt::decode(token).map_err(|e| e.to_string())?;
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let issuer = s(&claims["iss"]);
    let nats = &claims["nats"];
    let server_id = s(&nats["server_id"]["id"]);
    if !issuer.starts_with('N') || issuer != server_id {
        return Err(format!(
            "request issuer {issuer:?} is not the server it names ({server_id:?})"
        ));
    }
    if s(&claims["aud"]) != REQUEST_AUDIENCE || s(&nats["type"]) != "authorization_request" {
        return Err("not an authorization request".into());
    }
    if claims["exp"]
        .as_i64()
        .is_some_and(|exp| exp < jwt::unix_now())
    {
        return Err("request expired".into());
    }
    let user_nkey = s(&nats["user_nkey"]);
    if !user_nkey.starts_with('U') || KeyPair::from_public_key(&user_nkey).is_err() {
        return Err(format!("user_nkey {user_nkey:?} is not a user key"));
    }
    let opts = &nats["connect_opts"];
    Ok(Request {
        server_id,
        user_nkey,
        user: s(&opts["user"]),
        pass: s(&opts["pass"]),
        nonce: s(&nats["client_info"]["nonce"]),
    })
}

/// Connect as the gatekeeper and serve logins in the background.
pub async fn spawn(
    url: &str,
    seed_file: std::path::PathBuf,
    issuer: KeyPair,
    cfg: GatekeeperConfig,
    metrics: Arc<Metrics>,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let creds = actors::bus_auth::Credentials::Nkey {
        identity: BusIdentity::Gatekeeper,
        seed_file,
    };
    let client = creds
        .connect_options()?
        .name("grail-gatekeeper")
        .ping_interval(actors::bus::CLIENT_PING_INTERVAL)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connect(actors::bus::server_addrs(url)?)
        .await
        .map_err(|e| anyhow::anyhow!("gatekeeper cannot connect to {url}: {e}"))?;
    let keeper = Arc::new(Gatekeeper::new(cfg, issuer, metrics));
    Ok(tokio::spawn(keeper.serve(client)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use messages::Identity;

    fn request(server: &KeyPair, user: &str, pass: &str, nonce: &str) -> String {
        let claims = json!({
            "aud": REQUEST_AUDIENCE,
            "sub": "AXXX",
            "exp": jwt::unix_now() + 2,
            "nats": {
                "server_id": { "id": server.public_key(), "name": "s" },
                "user_nkey": KeyPair::new_user().public_key(),
                "client_info": { "nonce": nonce },
                "connect_opts": { "user": user, "pass": pass },
                "type": "authorization_request",
                "version": 2,
            }
        });
        jwt::encode(claims, server).unwrap()
    }

    fn keeper(per_minute: u32) -> Gatekeeper {
        Gatekeeper::new(
            GatekeeperConfig {
                network_id: "net".into(),
                max_new_miners_per_minute: per_minute,
                max_message_bytes: 1 << 20,
            },
            KeyPair::new_account(),
            Arc::new(Metrics::new()),
        )
    }

    fn outcome(g: &Gatekeeper, req: &str) -> Value {
        let answer = jwt::decode(&g.answer(req.as_bytes()).expect("answered")).unwrap();
        answer["nats"].clone()
    }

    #[test]
    fn admits_a_proven_hotkey_and_refuses_the_rest() {
        let server = KeyPair::new_server();
        let g = keeper(2);
        let miner = Identity::generate();
        let sig = |id: &Identity, net: &str, nonce: &str| {
            hex::encode(id.sign(&login_challenge(net, nonce.as_bytes())))
        };
        let ok = outcome(
            &g,
            &request(&server, miner.address(), &sig(&miner, "net", "n1"), "n1"),
        );
        let user = jwt::decode(ok["jwt"].as_str().expect("user jwt")).unwrap();
        assert_eq!(user["aud"], json!(ACCOUNT));
        assert_eq!(user["name"], json!(miner.address()));
        let allowed: Vec<String> =
            serde_json::from_value(user["nats"]["pub"]["allow"].clone()).unwrap();
        assert!(allowed.contains(&format!("grail.rollout.*.{}", miner.address())));

        let refusal = |req: String| {
            outcome(&g, &req)["error"]
                .as_str()
                .unwrap_or("")
                .to_string()
        };
        // Replay on another connection (another nonce).
        assert!(refusal(request(
            &server,
            miner.address(),
            &sig(&miner, "net", "n1"),
            "n2"
        ))
        .contains("bad_signature"));
        // Another network's signature.
        assert!(refusal(request(
            &server,
            miner.address(),
            &sig(&miner, "other", "n3"),
            "n3"
        ))
        .contains("bad_signature"));
        // Someone else's key for this address.
        let thief = Identity::generate();
        assert!(refusal(request(
            &server,
            miner.address(),
            &sig(&thief, "net", "n4"),
            "n4"
        ))
        .contains("bad_signature"));
        assert!(refusal(request(
            &server,
            "not-an-address",
            &sig(&miner, "net", "n5"),
            "n5"
        ))
        .contains("bad_address"));
        assert!(refusal(request(
            &server,
            miner.address(),
            &sig(&miner, "net", ""),
            ""
        ))
        .contains("no_nonce"));
        assert!(refusal(request(&server, "", "", "n6")).contains("no_credentials"));
        // Rate: 2 new keys per minute (one used above), returning keys always pass.
        let second = Identity::generate();
        assert!(outcome(
            &g,
            &request(&server, second.address(), &sig(&second, "net", "a"), "a")
        )["jwt"]
            .is_string());
        let third = Identity::generate();
        assert!(refusal(request(
            &server,
            third.address(),
            &sig(&third, "net", "b"),
            "b"
        ))
        .contains("rate_limited"));
        assert!(outcome(
            &g,
            &request(&server, miner.address(), &sig(&miner, "net", "c"), "c")
        )["jwt"]
            .is_string());
        let refused = g.metrics.render();
        assert!(
            refused.contains("grail_auth_refusals_total{reason=\"rate_limited\"} 1"),
            "{refused}"
        );
        assert!(
            refused.contains("grail_auth_refusals_total{reason=\"bad_signature\"} 3"),
            "{refused}"
        );
    }

    #[test]
    fn every_login_kind_and_refusal_reason_is_exported_at_zero_from_the_start() {
        let text = keeper(10).metrics.render();
        for refusal in Refusal::ALL {
            let series = format!(
                "grail_auth_refusals_total{{reason=\"{}\"}} 0",
                refusal.reason()
            );
            assert!(text.contains(&series), "{series} missing:\n{text}");
        }
        for kind in ["new", "returning"] {
            let series = format!("grail_auth_logins_total{{kind=\"{kind}\"}} 0");
            assert!(text.contains(&series), "{series} missing:\n{text}");
        }
    }

    #[test]
    fn unverifiable_requests_are_not_answered() {
        let g = keeper(10);
        let server = KeyPair::new_server();
        let miner = Identity::generate();
        let good = request(&server, miner.address(), "00", "n");
        // Garbled, and signed by a key that is not the server it names.
        assert!(g.answer(b"not a jwt").is_none());
        let parts: Vec<&str> = good.split('.').collect();
        assert!(g
            .answer(format!("{}.{}.AAAA", parts[0], parts[1]).as_bytes())
            .is_none());
        let mut claims = jwt::decode(&good).unwrap();
        claims["nats"]["server_id"]["id"] = json!(KeyPair::new_server().public_key());
        assert!(g
            .answer(jwt::encode(claims, &server).unwrap().as_bytes())
            .is_none());
        assert!(g
            .metrics
            .render()
            .contains("grail_auth_refusals_total{reason=\"bad_request\"} 3"));
    }
}
