//! What the chart tests share: helm at its pinned version, the chart rendered into JSON
//! objects, the permission table of the chart's README, and (for the tests that run the
//! operator) a token of the chart's ServiceAccount and free loopback ports; the throwaway
//! PostgreSQL is `offpeak_testenv::TempPostgres`.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use offpeak_testenv::{ControlPlane, Tools, pinned_version};
use serde_json::Value;

pub const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/offpeak");
pub const NAMESPACE: &str = "offpeak-system";

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// The Kubernetes version the control plane runs, for `helm template --kube-version`.
pub fn kube_version() -> String {
    pinned_version("KUBERNETES_VERSION")
        .unwrap_or("v1.34.0")
        .trim_start_matches('v')
        .to_string()
}

pub fn helm_path() -> anyhow::Result<PathBuf> {
    Ok(Tools::locate()?.helm()?.to_path_buf())
}

/// Runs helm; Ok(stdout) when it succeeds, Err(stderr + stdout) when it does not.
pub fn helm(args: &[&str]) -> anyhow::Result<std::result::Result<String, String>> {
    let output = Command::new(helm_path()?).args(args).output()?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    Ok(if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{stderr}{stdout}"))
    })
}

fn template_args<'a>(version: &'a str, values: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "template",
        "offpeak",
        CHART,
        "--namespace",
        NAMESPACE,
        "--kube-version",
        version,
    ];
    for value in values {
        args.extend(["--set", value]);
    }
    args
}

/// `helm template` with `--set` of each of `values`: every object, as JSON.
pub fn render(values: &[&str]) -> anyhow::Result<Vec<Value>> {
    let version = kube_version();
    match helm(&template_args(&version, values))? {
        Ok(text) => parse_yaml_stream(&text),
        Err(e) => anyhow::bail!("helm template {values:?} failed: {e}"),
    }
}

/// The error `helm template` gives for `values`, or a failure if it renders them.
pub fn refusal(values: &[&str]) -> anyhow::Result<String> {
    let version = kube_version();
    match helm(&template_args(&version, values))? {
        Ok(_) => anyhow::bail!("helm template accepted {values:?}"),
        Err(e) => Ok(e),
    }
}

pub fn parse_yaml_stream(text: &str) -> anyhow::Result<Vec<Value>> {
    let mut objects = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let value: Value = serde::Deserialize::deserialize(document)?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(objects)
}

/// The object of `kind` named `name`, or a failure naming what was rendered.
pub fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} among {:?}", kinds(objects)))
}

pub fn kinds(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// One permission: (scope, API group, resource, name, verb). Scope is "cluster" or
/// "release namespace"; name "any" when the rule names none; group "core" for "".
pub type Permission = (String, String, String, String, String);

fn list(cell: &str) -> Vec<String> {
    cell.split(',')
        .map(|s| s.trim().trim_matches('`').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Every permission the chart's README documents, from its table.
pub fn documented_permissions() -> anyhow::Result<BTreeSet<Permission>> {
    let readme = std::fs::read_to_string(repo("charts/offpeak/README.md"))?;
    let table = readme
        .split("<!-- permissions:begin -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- permissions:end -->").next())
        .context("charts/offpeak/README.md has no permissions table between its markers")?;
    let mut permissions = BTreeSet::new();
    for row in table.lines().filter(|l| l.starts_with('|')).skip(2) {
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        anyhow::ensure!(cells.len() == 6, "a permissions row has 6 cells: {row}");
        anyhow::ensure!(!cells[5].is_empty(), "every permission says why: {row}");
        for resource in list(cells[2]) {
            for name in list(cells[3]) {
                for verb in list(cells[4]) {
                    permissions.insert((
                        cells[0].to_string(),
                        cells[1].to_string(),
                        resource.clone(),
                        name.clone(),
                        verb,
                    ));
                }
            }
        }
    }
    Ok(permissions)
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// RBAC rules (`rules` of a role, or `resourceRules` of a rules review), one permission
/// per group, resource, name and verb.
pub fn expand_rules(scope: &str, rules: &Value) -> BTreeSet<Permission> {
    let mut out = BTreeSet::new();
    for rule in rules.as_array().into_iter().flatten() {
        let names = match strings(&rule["resourceNames"]) {
            names if names.is_empty() => vec!["any".to_string()],
            names => names,
        };
        for group in strings(&rule["apiGroups"]) {
            let group = if group.is_empty() {
                "core".to_string()
            } else {
                group
            };
            for resource in strings(&rule["resources"]) {
                for name in &names {
                    for verb in strings(&rule["verbs"]) {
                        out.insert((
                            scope.to_string(),
                            group.clone(),
                            resource.clone(),
                            name.clone(),
                            verb,
                        ));
                    }
                }
            }
        }
    }
    out
}

/// A kubeconfig that authenticates with a real token of ServiceAccount `account` in
/// `namespace` (TokenRequest, as the kubelet gets one for a pod): the account's groups
/// are the ones a pod would have.
pub async fn service_account_kubeconfig(
    plane: &ControlPlane,
    namespace: &str,
    account: &str,
) -> anyhow::Result<PathBuf> {
    let output = plane
        .kubectl()
        .args(["create", "token", account, "-n", namespace, "--duration=2h"])
        .output()
        .await?;
    anyhow::ensure!(
        output.status.success(),
        "kubectl create token {account}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout)?.trim().to_string();
    let dir = plane.dir().join("service-accounts");
    std::fs::create_dir_all(&dir)?;
    let ca = dir.join("ca.crt");
    std::fs::write(&ca, plane.ca_pem())?;
    let path = dir.join(format!("{namespace}-{account}.kubeconfig"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: offpeak-testenv
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: {account}
  user:
    token: {token}
contexts:
- name: {account}
  context:
    cluster: offpeak-testenv
    user: {account}
    namespace: {namespace}
current-context: {account}
",
            server = plane.server(),
            ca = ca.display(),
        ),
    )?;
    Ok(path)
}

/// A free loopback port.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
