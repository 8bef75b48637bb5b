//! The roles a cluster runs, as one closed type: `[roles.*]` sections, the single-role
//! commands, key files and bus identities all name a role by it; `as_str()` is the label on
//! the wire, in metrics and in file names.

use messages::bus_permissions::BusIdentity;
use messages::manifest::Authority;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Clock,
    Miner,
    Verifier,
    Trainer,
    Publisher,
    Scorer,
    Evaluator,
}

impl Role {
    /// Every role, in start order.
    pub const ALL: [Role; 7] = [
        Role::Clock,
        Role::Miner,
        Role::Verifier,
        Role::Trainer,
        Role::Publisher,
        Role::Scorer,
        Role::Evaluator,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Clock => "clock",
            Role::Miner => "miner",
            Role::Verifier => "verifier",
            Role::Trainer => "trainer",
            Role::Publisher => "publisher",
            Role::Scorer => "scorer",
            Role::Evaluator => "evaluator",
        }
    }

    /// The manifest authority whose keys this role signs with (miners have none: any
    /// admitted hotkey may mine).
    pub fn authority(self) -> Option<Authority> {
        Authority::of_role(self.as_str())
    }

    /// The operator bus identity of this role (miners log in with their hotkey instead).
    pub fn operator(self) -> Option<BusIdentity> {
        BusIdentity::operator(self.as_str())
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of [`Role::ALL`].
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown role {0:?}: use one of clock, miner, verifier, trainer, publisher, scorer, evaluator"
)]
pub struct UnknownRole(pub String);

impl std::str::FromStr for Role {
    type Err = UnknownRole;
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == name)
            .ok_or_else(|| UnknownRole(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_roles_are_refused() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        let e = "minr".parse::<Role>().unwrap_err().to_string();
        assert!(e.contains("\"minr\"") && e.contains("verifier"), "{e}");
        assert_eq!(Role::Miner.authority(), None);
        assert_eq!(Role::Publisher.authority(), Some(Authority::Publisher));
    }
}
