//! The malformed corpus: every manifest under `tests/fixtures/invalid/` is applied for real
//! with `kubectl apply -f` and must be refused, with the field path and the message a
//! person sees on kubectl's output, and nothing stored. Each fixture says
//! what it expects in its leading comment:
//!
//! ```yaml
//! # Why it is wrong, for people.
//! # field: spec.maxPricePerHour        (empty for a rule about the whole object)
//! # message: spec.maxPricePerHour is required for a Spot lease
//! ```

mod api_support;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use api_support::{api_for, namespace, package_dir, plane};
use kube::api::DynamicObject;
use tokio::io::AsyncWriteExt as _;

type TestResult = anyhow::Result<()>;

/// One malformed manifest and what the API server must say about it.
struct Fixture {
    path: PathBuf,
    field: String,
    message: String,
    object: DynamicObject,
}

fn fixtures_dir() -> PathBuf {
    package_dir().join("fixtures/invalid")
}

fn read_fixture(path: &Path) -> anyhow::Result<Fixture> {
    let text = std::fs::read_to_string(path)?;
    let header = |key: &str| {
        text.lines()
            .take_while(|line| line.starts_with('#'))
            .find_map(|line| line.strip_prefix(&format!("# {key}:")))
            .map(|value| value.trim().to_string())
            .with_context(|| format!("{} has no `# {key}:` line", path.display()))
    };
    Ok(Fixture {
        path: path.to_path_buf(),
        field: header("field")?,
        message: header("message")?,
        object: serde_yaml::from_str(&text)
            .with_context(|| format!("{} is not a manifest", path.display()))?,
    })
}

/// Every fixture whose file name starts with `prefix`, sorted.
fn fixtures(prefix: &str) -> anyhow::Result<Vec<Fixture>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml")
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect();
    paths.sort();
    paths.iter().map(|p| read_fixture(p)).collect()
}

/// `kubectl apply -f` of one fixture, as a person runs it; `Err` says what was wrong.
async fn check(
    plane: &offpeak_testenv::ControlPlane,
    client: &kube::Client,
    ns: &str,
    fixture: Fixture,
) -> anyhow::Result<()> {
    let file = fixture
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut object = fixture.object;
    let name = object.metadata.name.clone().unwrap_or_default();
    // Namespaced kinds land in this test's namespace (`-n`); kubectl refuses a manifest
    // that names another.
    object.metadata.namespace = None;
    let api = api_for(client, &object, ns)?;

    let mut kubectl = plane.kubectl();
    kubectl
        .args(["apply", "-n", ns, "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = kubectl.spawn()?;
    let mut stdin = child.stdin.take().context("kubectl's stdin")?;
    stdin.write_all(&serde_json::to_vec(&object)?).await?;
    drop(stdin);
    let output = child.wait_with_output().await?;
    let said = String::from_utf8_lossy(&output.stderr).into_owned();
    // What a person sees, for `--nocapture` readers judging the messages.
    eprintln!("{file}:\n    {}", said.trim());
    anyhow::ensure!(
        !output.status.success(),
        "{file}: kubectl apply accepted it: {}",
        String::from_utf8_lossy(&output.stdout).trim()
    );
    anyhow::ensure!(
        said.contains(&fixture.message),
        "{file}: kubectl apply does not say {:?}:\n    {}",
        fixture.message,
        said.trim()
    );
    if !fixture.field.is_empty() {
        // kubectl prints each cause as `<field>: <type>: <message>`, several on one line
        // joined by ", ", or one per line after "* ".
        let prefix = format!("{}: ", fixture.field);
        let named = said.lines().any(|line| {
            line.match_indices(&prefix).any(|(at, _)| {
                let boundary = line[..at]
                    .chars()
                    .last()
                    .is_none_or(|c| c == ' ' || c == '[');
                let cause = &line[at + prefix.len()..];
                let cause = cause.split(", spec.").next().unwrap_or(cause);
                boundary && cause.contains(&fixture.message)
            })
        });
        anyhow::ensure!(
            named,
            "{file}: kubectl apply does not say {:?} at {}:\n    {}",
            fixture.message,
            fixture.field,
            said.trim()
        );
    }
    anyhow::ensure!(
        api.get_opt(&name).await?.is_none(),
        "{file}: refused, yet {name} is stored"
    );
    Ok(())
}

/// Applies every fixture of one kind in its own namespace; reports every miss at once.
async fn corpus(prefix: &str, at_least: usize) -> TestResult {
    let plane = plane().await?;
    let ns = format!("api-invalid-{prefix}");
    let client = namespace(plane, &ns).await?;
    let fixtures = fixtures(&format!("{prefix}-"))?;
    anyhow::ensure!(
        fixtures.len() >= at_least,
        "only {} {prefix} fixtures",
        fixtures.len()
    );
    let mut misses = Vec::new();
    let count = fixtures.len();
    for fixture in fixtures {
        if let Err(miss) = check(plane, &client, &ns, fixture).await {
            misses.push(format!("{miss:#}"));
        }
    }
    assert!(
        misses.is_empty(),
        "{} of {count} {prefix} fixtures were not refused as expected:\n- {}",
        misses.len(),
        misses.join("\n- ")
    );
    Ok(())
}

#[tokio::test]
async fn malformed_leases_are_refused_field_by_field() -> TestResult {
    corpus("lease", 20).await
}

#[tokio::test]
async fn malformed_pools_are_refused_field_by_field() -> TestResult {
    corpus("pool", 8).await
}

#[tokio::test]
async fn malformed_reservations_are_refused_field_by_field() -> TestResult {
    corpus("reservation", 10).await
}

#[tokio::test]
async fn malformed_rate_cards_are_refused_field_by_field() -> TestResult {
    corpus("rate-card", 10).await
}

#[tokio::test]
async fn malformed_tenants_are_refused_field_by_field() -> TestResult {
    corpus("tenant", 6).await
}

#[tokio::test]
async fn malformed_bills_are_refused_field_by_field() -> TestResult {
    corpus("bill", 4).await
}

#[test]
fn every_fixture_is_annotated_and_belongs_to_a_kind() -> TestResult {
    let all = fixtures("")?;
    assert!(all.len() >= 40, "the corpus holds {} manifests", all.len());
    for fixture in &all {
        let file = fixture
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        assert!(
            [
                "lease-",
                "pool-",
                "reservation-",
                "rate-card-",
                "tenant-",
                "bill-"
            ]
            .iter()
            .any(|p| file.starts_with(p)),
            "{file} is applied by no test: name it after its kind"
        );
        assert!(!fixture.message.is_empty(), "{file} expects no message");
    }
    Ok(())
}
