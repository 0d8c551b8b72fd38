//! The host's GPUs: read from `nvidia-smi` when it is there, or from the
//! ids weir is configured with (`--gpus 0,1`).

use crate::executor::Error;
use std::process::Command;

/// One GPU of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpu {
    /// The device index, as `CUDA_VISIBLE_DEVICES` and Docker take it.
    pub index: String,
    /// The device UUID (`GPU-…`), when known.
    pub uuid: Option<String>,
    /// The model name, when known.
    pub name: Option<String>,
    /// Total memory in MiB, when known.
    pub memory_mib: Option<u64>,
}

/// The query weir runs: `nvidia-smi` with these arguments.
pub const NVIDIA_SMI_ARGS: &[&str] = &[
    "--query-gpu=index,uuid,name,memory.total",
    "--format=csv,noheader",
];

/// The host's GPUs: the `configured` ids when given, else what
/// `nvidia-smi` reports, else none. An `nvidia-smi` that runs but fails
/// or prints what cannot be read is an error, not an empty inventory.
pub fn inventory(configured: Option<&[String]>) -> Result<Vec<Gpu>, Error> {
    if let Some(ids) = configured {
        return Ok(ids
            .iter()
            .map(|id| Gpu {
                index: id.clone(),
                uuid: None,
                name: None,
                memory_mib: None,
            })
            .collect());
    }
    let output = match Command::new("nvidia-smi").args(NVIDIA_SMI_ARGS).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::Gpus(format!("cannot run nvidia-smi: {e}"))),
    };
    if !output.status.success() {
        return Err(Error::Gpus(format!(
            "nvidia-smi failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    parse_query(&String::from_utf8_lossy(&output.stdout))
}

/// Parses `nvidia-smi --query-gpu=index,uuid,name,memory.total[,…]
/// --format=csv[,noheader]`: one device per line, a header line skipped,
/// extra columns ignored, `[N/A]` values absent.
pub fn parse_query(text: &str) -> Result<Vec<Gpu>, Error> {
    let mut gpus = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with("index") {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let known = |i: usize| {
            fields
                .get(i)
                .filter(|f| !f.is_empty() && !f.starts_with('['))
                .map(|f| (*f).to_owned())
        };
        let index = known(0)
            .filter(|i| i.chars().all(|c| c.is_ascii_digit()))
            .ok_or_else(|| {
                Error::Gpus(format!(
                    "nvidia-smi line {}: expected 'index, uuid, name, memory.total', got '{line}'",
                    n + 1
                ))
            })?;
        let memory_mib = known(3).and_then(|m| m.trim_end_matches("MiB").trim().parse().ok());
        gpus.push(Gpu {
            index,
            uuid: known(1),
            name: known(2),
            memory_mib,
        });
    }
    Ok(gpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("test_data/nvidia-smi")
            .join(name);
        std::fs::read_to_string(path).expect("fixture")
    }

    fn h100() -> Gpu {
        Gpu {
            index: "0".to_owned(),
            uuid: Some("GPU-11b6881e-d920-047c-a957-cc6f5a6c52a5".to_owned()),
            name: Some("NVIDIA H100 80GB HBM3".to_owned()),
            memory_mib: Some(81559),
        }
    }

    #[test]
    fn reads_real_h100_output_with_and_without_header() {
        assert_eq!(
            parse_query(&fixture("nvidia-smi-query.csv")).expect("parses"),
            vec![h100()]
        );
        assert_eq!(
            parse_query(&fixture("nvidia-smi-query-header.csv")).expect("parses"),
            vec![h100()]
        );
    }

    #[test]
    fn reads_several_devices_and_unknown_values() {
        let gpus = parse_query(&fixture("multi-gpu.csv")).expect("parses");
        let indexes: Vec<&str> = gpus.iter().map(|g| g.index.as_str()).collect();
        assert_eq!(indexes, ["0", "1", "2", "3"]);
        assert_eq!(gpus[2].memory_mib, None);
        assert_eq!(gpus[3].memory_mib, Some(81920));
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let err = parse_query(&fixture("nvidia-smi-L.txt")).expect_err("not the query format");
        let err = err.to_string();
        assert!(err.starts_with("nvidia-smi line 1: expected"), "{err}");
        assert_eq!(parse_query("").expect("parses"), Vec::new());
    }

    #[test]
    fn configured_ids_win() {
        let ids = vec!["0".to_owned(), "1".to_owned()];
        let gpus = inventory(Some(&ids)).expect("configured");
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[1].index, "1");
    }
}
