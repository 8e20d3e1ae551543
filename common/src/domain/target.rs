//! How a target is reached: the engine that speaks to it and the TLS mode of
//! its sessions. Both are stored as text (`targets.engine`,
//! `targets.tls_mode`, each held to these values by a `CHECK`) and travel as
//! the same strings in the API, so one spelling serves the database, JSON
//! and messages.

use super::text_enum::text_enum;

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
        for &engine in Engine::ALL {
            let json = serde_json::to_value(engine).unwrap();
            assert_eq!(json, engine.as_str());
            assert_eq!(serde_json::from_value::<Engine>(json).unwrap(), engine);
            assert_eq!(engine.as_str().parse::<Engine>(), Ok(engine));
        }
        for &mode in TlsMode::ALL {
            let json = serde_json::to_value(mode).unwrap();
            assert_eq!(json, mode.as_str());
            assert_eq!(serde_json::from_value::<TlsMode>(json).unwrap(), mode);
            assert_eq!(mode.to_string().parse::<TlsMode>(), Ok(mode));
        }
        assert_eq!(
            Engine::ALL.iter().map(|e| e.as_str()).collect::<Vec<_>>(),
            ["postgres", "mysql"],
            "the targets.engine CHECK"
        );
        assert_eq!(
            TlsMode::ALL.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
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
