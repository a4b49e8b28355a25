//! `latch init`: a starter policy file and `samconfig.toml` for a first deployment, from a few
//! answers (flags, or questions on a terminal): the account, the CI (a GitHub organisation or a
//! GitLab group), the publisher role the CI assumes, the first elevatable role and its artifact
//! bucket. What it writes passes `latch policy check` (it is loaded with the functions' own
//! loader before anything is written) and names only the template's own parameters.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use latch_core::model::{AccountId, RoleArn};
use latch_core::policy::Policy;

use crate::CliError;

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The AWS account Latch and the roles it elevates live in (12 digits).
    #[arg(long)]
    account: Option<String>,
    /// A GitHub organisation whose repositories may ask (one of --github-org / --gitlab-group).
    #[arg(long, value_name = "ORG", conflicts_with = "gitlab_group")]
    github_org: Option<String>,
    /// A GitLab group whose projects may ask.
    #[arg(long, value_name = "GROUP")]
    gitlab_group: Option<String>,
    /// The first role to elevate, created by you under /latch/ with the stack's boundary.
    #[arg(long, value_name = "NAME", default_value = "app-deployer")]
    role: String,
    /// The role your CI assumes to publish events (its principal in the bus policy).
    #[arg(long, value_name = "NAME", default_value = "ci-publisher")]
    publisher_role: String,
    /// The bucket the first permission set writes build artifacts to (per pipeline prefix).
    #[arg(long, value_name = "BUCKET")]
    bucket: Option<String>,
    /// Where to write policies.yaml and samconfig.toml.
    #[arg(long, value_name = "DIR", default_value = ".")]
    out: PathBuf,
    /// Overwrite files that exist.
    #[arg(long)]
    force: bool,
}

/// The CI whose OIDC tokens prove the jobs.
enum Ci {
    GitHub { org: String },
    GitLab { group: String },
}

pub fn run(args: InitArgs) -> Result<ExitCode, CliError> {
    let account = answer(args.account.clone(), "AWS account id (12 digits)")?;
    let account = AccountId::parse(&account).map_err(|e| CliError::Usage(format!("--account: {e}")))?;
    let ci = match (args.github_org.clone(), args.gitlab_group.clone()) {
        (Some(org), None) => Ci::GitHub { org },
        (None, Some(group)) => Ci::GitLab { group },
        _ => {
            let org = answer(None, "GitHub organisation (empty for GitLab)")?;
            if org.is_empty() {
                Ci::GitLab {
                    group: answer(None, "GitLab group")?,
                }
            } else {
                Ci::GitHub { org }
            }
        }
    };
    let owner = match &ci {
        Ci::GitHub { org } => org,
        Ci::GitLab { group } => group,
    };
    if owner.is_empty() || !owner.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c)) {
        return Err(CliError::Usage(format!(
            "{owner:?} is not a GitHub organisation or GitLab group name"
        )));
    }
    let role = RoleArn::parse(&format!("arn:aws:iam::{}:role/latch/{}", account.as_str(), args.role))
        .map_err(|e| CliError::Usage(format!("--role: {e}")))?;
    let publisher = RoleArn::parse(&format!(
        "arn:aws:iam::{}:role/{}",
        account.as_str(),
        args.publisher_role
    ))
    .map_err(|e| CliError::Usage(format!("--publisher-role: {e}")))?;
    let bucket = args
        .bucket
        .clone()
        .unwrap_or_else(|| format!("{}-artifacts-{}", role.name(), account.as_str()));
    let policy = starter_policy(&account, &ci, &role, &bucket);
    // Loaded with the functions' own loader: what init writes is what the stack will accept.
    Policy::load(&policy, "policies.yaml")?;
    let source = match ci {
        Ci::GitHub { .. } => "ci.github",
        Ci::GitLab { .. } => "ci.gitlab",
    };
    let samconfig = starter_samconfig(&publisher, source);
    std::fs::create_dir_all(&args.out).map_err(|e| CliError::Read {
        path: args.out.clone(),
        source: e,
    })?;
    for (name, text) in [("policies.yaml", &policy), ("samconfig.toml", &samconfig)] {
        let path = args.out.join(name);
        if path.exists() && !args.force {
            return Err(CliError::Usage(format!(
                "{} exists; pass --force to overwrite it",
                path.display()
            )));
        }
        std::fs::write(&path, text).map_err(|e| CliError::Read {
            path: path.clone(),
            source: e,
        })?;
        eprintln!("wrote {}", path.display());
    }
    eprintln!(
        "next: copy policies.yaml over infra/policies.yaml and samconfig.toml to the repository's root, \
         `latch policy check infra/policies.yaml`, `sam build && sam deploy`, then create role {} \
         under /latch/ with the stack's BoundaryArn as its permissions boundary (docs/deploy.md)",
        role.as_str()
    );
    Ok(ExitCode::SUCCESS)
}

/// A flag's value, else the answer to `question` on a terminal, else a usage error.
fn answer(given: Option<String>, question: &str) -> Result<String, CliError> {
    if let Some(v) = given {
        return Ok(v.trim().to_owned());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(format!(
            "{question}: give it as a flag (see `latch init --help`)"
        )));
    }
    eprint!("{question}: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::Usage(format!("reading the answer: {e}")))?;
    Ok(line.trim().to_owned())
}

fn starter_policy(account: &AccountId, ci: &Ci, role: &RoleArn, bucket: &str) -> String {
    let account = account.as_str();
    let (issuer, rule, source) = match ci {
        Ci::GitHub { org } => (
            "  - name: github\n    kind: github\n    url: https://token.actions.githubusercontent.com\n    \
             audience: latch\n    algorithms: [RS256]\n    max_token_age: 10m\n"
                .to_owned(),
            format!(
                "  - name: {org}-deploys\n    issuer: github\n    claims:\n      repository: {org}/*\n      \
                 ref: refs/heads/main\n"
            ),
            "ci.github",
        ),
        Ci::GitLab { group } => (
            "  - name: gitlab\n    kind: gitlab\n    url: https://gitlab.com\n    \
             exact_audience: https://latch.example.com\n    algorithms: [RS256]\n    max_token_age: 10m\n"
                .to_owned(),
            format!(
                "  - name: {}-deploys\n    issuer: gitlab\n    claims:\n      project_path: {group}/*\n      \
                 ref_protected: \"true\"\n",
                group.replace(['/', '.', '_'], "-")
            ),
            "ci.gitlab",
        ),
    };
    format!(
        "# Latch policy file, written by `latch init`. Check it with `latch policy check FILE`;\n\
         # docs/reference/policy-file.md explains every field.\n\
         version: 1\n\
         elevatable_path: /latch/\n\
         \n\
         issuers:\n{issuer}\
         \n\
         permission_sets:\n  \
           deploy-artifacts:\n    \
             description: Upload and read this pipeline's build artifacts.\n    \
             max_duration: 30m\n    \
             statements:\n      \
               - actions: [s3:PutObject, s3:GetObject]\n        \
                 resources: [\"arn:aws:s3:::{bucket}/${{pipeline}}/*\"]\n\
         \n\
         rules:\n{rule}    \
           sources: [{source}]\n    \
           accounts: [\"{account}\"]\n    \
           roles: [\"{role}\"]\n    \
           permission_sets: [deploy-artifacts]\n    \
           max_duration: 30m\n    \
           max_active_grants_per_role: 5\n",
        role = role.as_str(),
    )
}

fn starter_samconfig(publisher: &RoleArn, source: &str) -> String {
    format!(
        "# SAM CLI configuration, written by `latch init`: `sam build && sam deploy`.\n\
         version = 0.1\n\
         \n\
         [default.global.parameters]\n\
         stack_name = \"latch\"\n\
         \n\
         [default.build.parameters]\n\
         beta_features = true\n\
         build_dir = \"target/sam-build\"\n\
         cached = false\n\
         parallel = false\n\
         \n\
         [default.deploy.parameters]\n\
         template_file = \"target/sam-build/template.yaml\"\n\
         capabilities = \"CAPABILITY_IAM\"\n\
         confirm_changeset = true\n\
         fail_on_empty_changeset = false\n\
         resolve_s3 = true\n\
         # Publishers: PRINCIPAL=>SOURCE pairs, comma-separated; each may publish its source only.\n\
         parameter_overrides = \"Publishers={}=>{source}\"\n",
        publisher.as_str()
    )
}
