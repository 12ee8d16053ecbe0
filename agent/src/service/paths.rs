//! Where the agent keeps its files on Windows. Pure string work on the
//! `ProgramData` folder, so it is tested on any OS.

use std::path::PathBuf;

/// The agent's folders under `%ProgramData%\Kiroku`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowsPaths {
    /// `%ProgramData%\Kiroku`, without a trailing separator.
    root: String,
}

impl WindowsPaths {
    /// Below `program_data` (`C:\ProgramData`; a trailing `\` is allowed).
    pub fn new(program_data: &str) -> WindowsPaths {
        let base = program_data.trim_end_matches(['\\', '/']);
        WindowsPaths {
            root: format!("{base}\\Kiroku"),
        }
    }

    /// From the `ProgramData` environment variable (set for services as for
    /// users), `C:\ProgramData` when it is missing or empty.
    pub fn from_env() -> WindowsPaths {
        let pd = std::env::var("ProgramData")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| "C:\\ProgramData".to_owned());
        WindowsPaths::new(&pd)
    }

    /// `%ProgramData%\Kiroku`: the folder that carries the restricted ACL.
    pub fn root(&self) -> PathBuf {
        PathBuf::from(&self.root)
    }

    /// `%ProgramData%\Kiroku\agent.toml`.
    pub fn config(&self) -> PathBuf {
        PathBuf::from(format!("{}\\agent.toml", self.root))
    }

    /// `%ProgramData%\Kiroku\agent`: the buffer (`data_dir`).
    pub fn data_dir(&self) -> PathBuf {
        PathBuf::from(format!("{}\\agent", self.root))
    }

    /// `%ProgramData%\Kiroku\logs`.
    pub fn log_dir(&self) -> PathBuf {
        PathBuf::from(format!("{}\\logs", self.root))
    }
}

#[cfg(test)]
mod tests {
    use super::WindowsPaths;

    #[test]
    fn paths_below_program_data() {
        for pd in ["C:\\ProgramData", "C:\\ProgramData\\", "D:\\PD/"] {
            let p = WindowsPaths::new(pd);
            let base = pd.trim_end_matches(['\\', '/']);
            assert_eq!(p.root().to_str(), Some(format!("{base}\\Kiroku").as_str()));
            assert_eq!(
                p.config().to_str(),
                Some(format!("{base}\\Kiroku\\agent.toml").as_str())
            );
            assert_eq!(
                p.data_dir().to_str(),
                Some(format!("{base}\\Kiroku\\agent").as_str())
            );
            assert_eq!(
                p.log_dir().to_str(),
                Some(format!("{base}\\Kiroku\\logs").as_str())
            );
        }
    }
}
