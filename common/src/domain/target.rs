//! How a target is reached: the engine that speaks to it and the TLS mode of
//! its sessions. Both are stored as text (`targets.engine`,
//! `targets.tls_mode`, each held to these values by a `CHECK`) and travel as
//! the same strings in the API, so one spelling serves the database, JSON
//! and messages.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use sqlx::{
    Decode, Encode, Postgres, Type,
    encode::IsNull,
    error::BoxDynError,
    postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef},
};

use super::run::UnknownValue;

/// An enum whose values are fixed strings: serde, `Display`, `FromStr`, and
/// a PostgreSQL `text` column all read and write exactly these strings.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$variant_meta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$variant_meta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: [$name; [$($text),+].len()] = [$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;

            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                $name::ALL.into_iter().find(|v| v.as_str() == s).ok_or_else(|| UnknownValue {
                    kind: stringify!($name),
                    value: s.to_owned(),
                })
            }
        }

        impl Type<Postgres> for $name {
            fn type_info() -> PgTypeInfo {
                <&str as Type<Postgres>>::type_info()
            }

            fn compatible(ty: &PgTypeInfo) -> bool {
                <&str as Type<Postgres>>::compatible(ty)
            }
        }

        impl Encode<'_, Postgres> for $name {
            fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
                <&str as Encode<Postgres>>::encode_by_ref(&self.as_str(), buf)
            }
        }

        impl<'r> Decode<'r, Postgres> for $name {
            fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
                Ok(<&str as Decode<Postgres>>::decode(value)?.parse()?)
            }
        }
    };
}

text_enum!(
    /// The database engine of a target. A MariaDB target is `mysql`: same
    /// protocol, same client; where the two servers differ, the session
    /// tells them apart by its `VERSION()` (`targets::mysql::Flavor`).
    Engine {
        Postgres => "postgres",
        Mysql => "mysql",
    }
);

impl Engine {
    /// The port a target of this engine listens on unless told otherwise.
    pub fn default_port(self) -> u16 {
        match self {
            Engine::Postgres => 5432,
            Engine::Mysql => 3306,
        }
    }
}

text_enum!(
    /// How a target's sessions use TLS, with libpq's meanings on both
    /// engines.
    #[derive(Default)]
    TlsMode {
        /// Never encrypt.
        Disable => "disable",
        /// Encrypt when the server offers TLS, without checking its
        /// certificate; fall back to a plain session when it offers none.
        #[default]
        Prefer => "prefer",
        /// Always encrypt, without checking the certificate.
        Require => "require",
        /// Always encrypt, and check the chain and that it names the host.
        VerifyFull => "verify-full",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_and_api_strings_round_trip() {
        for engine in Engine::ALL {
            let json = serde_json::to_value(engine).unwrap();
            assert_eq!(json, engine.as_str());
            assert_eq!(serde_json::from_value::<Engine>(json).unwrap(), engine);
            assert_eq!(engine.as_str().parse::<Engine>(), Ok(engine));
        }
        for mode in TlsMode::ALL {
            let json = serde_json::to_value(mode).unwrap();
            assert_eq!(json, mode.as_str());
            assert_eq!(serde_json::from_value::<TlsMode>(json).unwrap(), mode);
            assert_eq!(mode.to_string().parse::<TlsMode>(), Ok(mode));
        }
        assert_eq!(
            Engine::ALL.map(Engine::as_str),
            ["postgres", "mysql"],
            "the targets.engine CHECK"
        );
        assert_eq!(
            TlsMode::ALL.map(TlsMode::as_str),
            ["disable", "prefer", "require", "verify-full"],
            "the targets.tls_mode CHECK"
        );
    }

    #[test]
    fn only_the_stored_spellings_parse() {
        assert!("mariadb".parse::<Engine>().is_err());
        assert!("Postgres".parse::<Engine>().is_err());
        assert!("verify_full".parse::<TlsMode>().is_err());
        assert_eq!(
            "sometimes".parse::<TlsMode>().unwrap_err().to_string(),
            "unknown TlsMode: \"sometimes\""
        );
        assert_eq!(TlsMode::default(), TlsMode::Prefer);
        assert_eq!(Engine::Mysql.default_port(), 3306);
        assert_eq!(Engine::Postgres.default_port(), 5432);
    }
}
