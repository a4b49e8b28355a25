//! The guardrail catalogue: the IAM privilege-escalation methods documented in public research,
//! and Latch's own resources, each under a stable name. A permission set that could use one is
//! refused at load unless it names the method under `allow_escalation` (DESIGN.md, limit 3).
//!
//! Contract: [`methods_used`] over-approximates, never under-approximates, what IAM would allow.
//! Actions compare with IAM's wildcards (`*` any run, `?` one character) case-insensitively, as
//! IAM matches actions; resources compare with the same wildcards case-sensitively, as IAM
//! matches ARNs. A statement written with `not_actions` grants every catalogued action none of
//! its patterns names; one written with `not_resources` counts as reaching every resource; set
//! conditions are ignored (a condition the caller controls, or that always holds, narrows
//! nothing); Deny statements grant nothing. Resources are the set's, rendered with the widest
//! values a rule lets each placeholder take ([`Widest`]): the check holds for every grant the
//! rule can make, not for one example.

use super::Statement;
use super::render::Widest;

/// One catalogued escalation method.
#[derive(Debug)]
pub struct Method {
    /// Stable: files name it in `allow_escalation`.
    pub name: &'static str,
    /// One line on why it is dangerous.
    pub why: &'static str,
    /// Where it is documented.
    pub sources: &'static [&'static str],
    needs: Needs,
}

#[derive(Debug)]
enum Needs {
    /// Every one, each from any Allow statement of the set.
    AllOf(&'static [Need]),
    /// Any one.
    AnyOf(&'static [Need]),
}

/// One permission a method needs: any of `actions` on a resource within `reach`.
#[derive(Debug)]
struct Need {
    actions: &'static [&'static str],
    reach: Reach,
}

#[derive(Debug, Clone, Copy)]
enum Reach {
    /// The action is dangerous whatever resource it names.
    AnyResource,
    /// A resource of this ARN prefix whose name no literal pins: `function:*`, `*`, but not
    /// `function:app-*` (the pipeline's own functions).
    Unpinned(&'static str),
    /// A resource of this ARN prefix with any wildcard in it: `role/*`, `role/latch/*`.
    Wildcarded(&'static str),
    /// A resource that could be one of these.
    Matching(&'static [&'static str]),
}

const RHINO: &str = "https://rhinosecuritylabs.com/aws/aws-privilege-escalation-methods-mitigation/";
const BISHOP_FOX: &str = "https://github.com/BishopFox/iam-vulnerable";

const ROLE: &str = "arn:*:iam::*:role/";
const FUNCTION: &str = "arn:*:lambda:*:*:function:";
const INSTANCE: &str = "arn:*:ec2:*:*:instance/";
const PROJECT: &str = "arn:*:codebuild:*:*:project/";
const STACK: &str = "arn:*:cloudformation:*:*:stack/";

const fn any(actions: &'static [&'static str]) -> Need {
    Need {
        actions,
        reach: Reach::AnyResource,
    }
}

const PASS_ANY_ROLE: Need = any(&["iam:PassRole"]);

/// The catalogue, in the order `latch policy check --guardrails` lists it.
pub static CATALOGUE: &[Method] = &[
    Method {
        name: "iam-policy-versions",
        why: "a new or older default version of a managed policy rewrites what every holder of it may do",
        sources: &["https://pathfinding.cloud/paths/iam-001", RHINO],
        needs: Needs::AnyOf(&[any(&["iam:CreatePolicyVersion", "iam:SetDefaultPolicyVersion"])]),
    },
    Method {
        name: "iam-attach-policies",
        why: "attaching a managed policy such as AdministratorAccess to a user, group or role grants it outright",
        sources: &[
            "https://pathfinding.cloud/paths/iam-008",
            "https://pathfinding.cloud/paths/iam-009",
            "https://pathfinding.cloud/paths/iam-010",
        ],
        needs: Needs::AnyOf(&[any(&[
            "iam:AttachUserPolicy",
            "iam:AttachGroupPolicy",
            "iam:AttachRolePolicy",
        ])]),
    },
    Method {
        name: "iam-inline-policies",
        why: "an inline policy put on a user, group or role (the job's own included) says whatever its writer wants",
        sources: &[
            "https://pathfinding.cloud/paths/iam-005",
            "https://pathfinding.cloud/paths/iam-007",
            "https://pathfinding.cloud/paths/iam-011",
        ],
        needs: Needs::AnyOf(&[any(&["iam:PutUserPolicy", "iam:PutGroupPolicy", "iam:PutRolePolicy"])]),
    },
    Method {
        name: "iam-group-membership",
        why: "adding a user to a group gives it every policy of that group",
        sources: &["https://pathfinding.cloud/paths/iam-013", RHINO],
        needs: Needs::AnyOf(&[any(&["iam:AddUserToGroup"])]),
    },
    Method {
        name: "iam-access-keys",
        why: "a new access key for another user is a long-lived credential with that user's permissions",
        sources: &[
            "https://pathfinding.cloud/paths/iam-002",
            "https://pathfinding.cloud/paths/iam-003",
        ],
        needs: Needs::AnyOf(&[any(&["iam:CreateAccessKey"])]),
    },
    Method {
        name: "iam-login-profiles",
        why: "setting a user's console password signs in as that user",
        sources: &[
            "https://pathfinding.cloud/paths/iam-004",
            "https://pathfinding.cloud/paths/iam-006",
        ],
        needs: Needs::AnyOf(&[any(&["iam:CreateLoginProfile", "iam:UpdateLoginProfile"])]),
    },
    Method {
        name: "iam-trust-policies",
        why: "rewriting a role's trust policy lets any chosen principal assume it",
        sources: &["https://pathfinding.cloud/paths/iam-012", RHINO],
        needs: Needs::AnyOf(&[any(&["iam:UpdateAssumeRolePolicy"])]),
    },
    Method {
        name: "iam-permissions-boundaries",
        why: "removing or replacing a permissions boundary lifts the ceiling Latch relies on for every elevatable role",
        sources: &["https://docs.aws.amazon.com/IAM/latest/UserGuide/access_policies_boundaries.html"],
        needs: Needs::AnyOf(&[any(&[
            "iam:DeleteRolePermissionsBoundary",
            "iam:PutRolePermissionsBoundary",
            "iam:DeleteUserPermissionsBoundary",
            "iam:PutUserPermissionsBoundary",
        ])]),
    },
    Method {
        name: "sts-assume-role-broad",
        why: "assuming any role a wildcard admits borrows whatever those roles hold, other pipelines' grants included",
        sources: &["https://pathfinding.cloud/paths/sts-001", BISHOP_FOX],
        needs: Needs::AnyOf(&[Need {
            actions: &["sts:AssumeRole"],
            reach: Reach::Wildcarded(ROLE),
        }]),
    },
    Method {
        name: "passrole-broad",
        why: "passing any role a wildcard admits hands it to whichever service the role's own policies can drive",
        sources: &[
            "https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_use_passrole.html",
            RHINO,
        ],
        needs: Needs::AnyOf(&[Need {
            actions: &["iam:PassRole"],
            reach: Reach::Wildcarded(ROLE),
        }]),
    },
    Method {
        name: "passrole-lambda",
        why: "a new Lambda function given a passed role runs the job's code as that role",
        sources: &[
            "https://pathfinding.cloud/paths/lambda-001",
            "https://pathfinding.cloud/paths/lambda-002",
            "https://pathfinding.cloud/paths/lambda-006",
        ],
        needs: Needs::AllOf(&[PASS_ANY_ROLE, any(&["lambda:CreateFunction"])]),
    },
    Method {
        name: "passrole-ec2",
        why: "an instance launched with a passed role's profile serves that role's credentials to the job",
        sources: &[
            "https://pathfinding.cloud/paths/ec2-001",
            "https://pathfinding.cloud/paths/ec2-003",
        ],
        needs: Needs::AllOf(&[PASS_ANY_ROLE, any(&["ec2:RunInstances", "ec2:RequestSpotInstances"])]),
    },
    Method {
        name: "passrole-ecs",
        why: "a task definition given a passed role runs the job's container as that role",
        sources: &[
            "https://pathfinding.cloud/paths/ecs-001",
            "https://pathfinding.cloud/paths/ecs-002",
            "https://pathfinding.cloud/paths/ecs-004",
            "https://pathfinding.cloud/paths/ecs-005",
        ],
        needs: Needs::AllOf(&[
            PASS_ANY_ROLE,
            any(&[
                "ecs:RegisterTaskDefinition",
                "ecs:RunTask",
                "ecs:StartTask",
                "ecs:CreateService",
                "ecs:UpdateService",
            ]),
        ]),
    },
    Method {
        name: "passrole-glue",
        why: "a Glue dev endpoint or job given a passed role runs the job's code as that role",
        sources: &[
            "https://pathfinding.cloud/paths/glue-001",
            "https://pathfinding.cloud/paths/glue-003",
            "https://pathfinding.cloud/paths/glue-005",
        ],
        needs: Needs::AllOf(&[
            PASS_ANY_ROLE,
            any(&["glue:CreateDevEndpoint", "glue:CreateJob", "glue:UpdateJob"]),
        ]),
    },
    Method {
        name: "passrole-cloudformation",
        why: "a stack given a passed service role creates whatever resources that role may create",
        sources: &[
            "https://pathfinding.cloud/paths/cloudformation-001",
            "https://pathfinding.cloud/paths/cloudformation-003",
            "https://pathfinding.cloud/paths/cloudformation-004",
        ],
        needs: Needs::AllOf(&[
            PASS_ANY_ROLE,
            any(&[
                "cloudformation:CreateStack",
                "cloudformation:UpdateStack",
                "cloudformation:CreateStackSet",
                "cloudformation:UpdateStackSet",
                "cloudformation:CreateChangeSet",
            ]),
        ]),
    },
    Method {
        name: "passrole-codebuild",
        why: "a CodeBuild project given a passed service role runs the job's buildspec as that role",
        sources: &[
            "https://pathfinding.cloud/paths/codebuild-001",
            "https://pathfinding.cloud/paths/codebuild-004",
        ],
        needs: Needs::AllOf(&[
            PASS_ANY_ROLE,
            any(&["codebuild:CreateProject", "codebuild:UpdateProject"]),
        ]),
    },
    Method {
        name: "passrole-sagemaker",
        why: "a notebook, training or processing job given a passed role runs the job's code as that role",
        sources: &[
            "https://pathfinding.cloud/paths/sagemaker-001",
            "https://pathfinding.cloud/paths/sagemaker-002",
            "https://pathfinding.cloud/paths/sagemaker-003",
        ],
        needs: Needs::AllOf(&[
            PASS_ANY_ROLE,
            any(&[
                "sagemaker:CreateNotebookInstance",
                "sagemaker:CreateTrainingJob",
                "sagemaker:CreateProcessingJob",
            ]),
        ]),
    },
    Method {
        name: "passrole-datapipeline",
        why: "a Data Pipeline given a passed role runs the job's commands as that role",
        sources: &["https://pathfinding.cloud/paths/datapipeline-001", RHINO],
        needs: Needs::AllOf(&[
            PASS_ANY_ROLE,
            any(&["datapipeline:CreatePipeline", "datapipeline:PutPipelineDefinition"]),
        ]),
    },
    Method {
        name: "passrole-apprunner",
        why: "an App Runner service given a passed instance role runs the job's image as that role",
        sources: &["https://pathfinding.cloud/paths/apprunner-001"],
        needs: Needs::AllOf(&[PASS_ANY_ROLE, any(&["apprunner:CreateService"])]),
    },
    Method {
        name: "lambda-code-update",
        why: "new code or configuration (layers, handler, environment) for functions not pinned by name runs as their roles",
        sources: &[
            "https://pathfinding.cloud/paths/lambda-003",
            "https://pathfinding.cloud/paths/lambda-004",
            RHINO,
        ],
        needs: Needs::AnyOf(&[Need {
            actions: &["lambda:UpdateFunctionCode", "lambda:UpdateFunctionConfiguration"],
            reach: Reach::Unpinned(FUNCTION),
        }]),
    },
    Method {
        name: "codebuild-existing-projects",
        why: "starting a build of a project not pinned by name, with a buildspec override, runs the job's commands as its service role",
        sources: &[
            "https://pathfinding.cloud/paths/codebuild-002",
            "https://pathfinding.cloud/paths/codebuild-003",
        ],
        needs: Needs::AnyOf(&[Need {
            actions: &["codebuild:StartBuild", "codebuild:StartBuildBatch"],
            reach: Reach::Unpinned(PROJECT),
        }]),
    },
    Method {
        name: "cloudformation-existing-stacks",
        why: "updating a stack not pinned by name acts with its service role, whatever that role may do",
        sources: &[
            "https://pathfinding.cloud/paths/cloudformation-002",
            "https://pathfinding.cloud/paths/cloudformation-005",
        ],
        needs: Needs::AnyOf(&[Need {
            actions: &[
                "cloudformation:UpdateStack",
                "cloudformation:CreateChangeSet",
                "cloudformation:ExecuteChangeSet",
            ],
            reach: Reach::Unpinned(STACK),
        }]),
    },
    Method {
        name: "glue-dev-endpoints",
        why: "an SSH key added to an existing Glue dev endpoint is a shell as its role",
        sources: &["https://pathfinding.cloud/paths/glue-002", RHINO],
        needs: Needs::AnyOf(&[any(&["glue:UpdateDevEndpoint"])]),
    },
    Method {
        name: "ec2-instance-takeover",
        why: "user data, launch templates or an SSH key pushed to an instance run the job's commands as its instance role",
        sources: &[
            "https://pathfinding.cloud/paths/ec2-002",
            "https://pathfinding.cloud/paths/ec2-004",
            "https://pathfinding.cloud/paths/ec2instanceconnect-003",
        ],
        needs: Needs::AnyOf(&[any(&[
            "ec2:ModifyInstanceAttribute",
            "ec2:CreateLaunchTemplateVersion",
            "ec2:ModifyLaunchTemplate",
            "ec2-instance-connect:SendSSHPublicKey",
        ])]),
    },
    Method {
        name: "ssm-command-execution",
        why: "a command or session on instances not pinned by id runs as their instance roles",
        sources: &[
            "https://pathfinding.cloud/paths/ssm-001",
            "https://pathfinding.cloud/paths/ssm-002",
            BISHOP_FOX,
        ],
        needs: Needs::AnyOf(&[Need {
            actions: &["ssm:SendCommand", "ssm:StartSession"],
            reach: Reach::Unpinned(INSTANCE),
        }]),
    },
    Method {
        name: "sagemaker-notebook-access",
        why: "a presigned notebook URL is a Jupyter shell as the notebook's role",
        sources: &["https://pathfinding.cloud/paths/sagemaker-004"],
        needs: Needs::AnyOf(&[any(&["sagemaker:CreatePresignedNotebookInstanceUrl"])]),
    },
    Method {
        name: "latch-self-modification",
        why: "Latch's own functions, table, bus, queues, logs, roles and stack (default stack name latch): the grant function's code or records rewritten is every limit gone",
        sources: &["https://pathfinding.cloud/paths/lambda-003"],
        needs: Needs::AnyOf(&[
            Need {
                actions: &["lambda:*"],
                reach: Reach::Matching(&[
                    "arn:*:lambda:*:*:function:latch-*",
                    "arn:*:lambda:*:*:function:latch-*:*",
                    "arn:*:lambda:*:*:layer:latch-*",
                    "arn:*:lambda:*:*:layer:latch-*:*",
                ]),
            },
            Need {
                actions: &["dynamodb:*"],
                reach: Reach::Matching(&["arn:*:dynamodb:*:*:table/latch-*"]),
            },
            Need {
                actions: &["events:*"],
                reach: Reach::Matching(&["arn:*:events:*:*:event-bus/latch", "arn:*:events:*:*:rule/latch*"]),
            },
            Need {
                actions: &["sqs:*"],
                reach: Reach::Matching(&["arn:*:sqs:*:*:latch-*"]),
            },
            Need {
                actions: &["sns:*"],
                reach: Reach::Matching(&["arn:*:sns:*:*:latch-*"]),
            },
            Need {
                actions: &["logs:*"],
                reach: Reach::Matching(&["arn:*:logs:*:*:log-group:/aws/lambda/latch-*"]),
            },
            Need {
                actions: &["cloudwatch:*"],
                reach: Reach::Matching(&["arn:*:cloudwatch:*:*:alarm:latch-*"]),
            },
            Need {
                actions: &["iam:*"],
                reach: Reach::Matching(&["arn:*:iam::*:role/latch-*", "arn:*:iam::*:policy/latch-*"]),
            },
            Need {
                actions: &["cloudformation:*"],
                reach: Reach::Matching(&["arn:*:cloudformation:*:*:stack/latch/*"]),
            },
        ]),
    },
];

/// The catalogued method named `name`.
pub fn method(name: &str) -> Option<&'static Method> {
    CATALOGUE.iter().find(|m| m.name == name)
}

/// A method a set could use: where (statement index, the set's action that reaches it) and, for
/// methods that depend on the resource, the widest resource that does.
#[derive(Debug, Clone)]
pub struct Use {
    pub method: &'static Method,
    pub statement: usize,
    pub action: String,
    pub resource: Option<String>,
}

/// One Allow statement as the check sees it: its action patterns and its resources at their widest.
struct Granted<'a> {
    index: usize,
    statement: &'a Statement,
    resources: Vec<String>,
}

/// Every catalogued method the set's statements could use when its placeholders take `widest`.
pub fn methods_used(statements: &[Statement], widest: &Widest) -> Vec<Use> {
    let granted: Vec<Granted<'_>> = statements
        .iter()
        .enumerate()
        .filter(|(_, s)| s.effect == super::Effect::Allow)
        .map(|(index, statement)| Granted {
            index,
            statement,
            resources: statement.resources.iter().flat_map(|r| r.widest(widest)).collect(),
        })
        .collect();
    let met = |need: &Need| granted.iter().find_map(|g| meets(g, need));
    CATALOGUE
        .iter()
        .filter_map(|method| {
            let found = match &method.needs {
                Needs::AllOf(needs) => {
                    let all: Option<Vec<(usize, String, Option<String>)>> = needs.iter().map(met).collect();
                    all.and_then(|v| v.into_iter().next())
                }
                Needs::AnyOf(needs) => needs.iter().find_map(met),
            };
            found.map(|(statement, action, resource)| Use {
                method,
                statement,
                action,
                resource,
            })
        })
        .collect()
}

/// Whether `g` grants one of the need's actions on a resource in its reach: the statement, the
/// set's action text that does, and the resource when the reach depends on one.
fn meets(g: &Granted<'_>, need: &Need) -> Option<(usize, String, Option<String>)> {
    let s = g.statement;
    let action = if s.not_actions.is_empty() {
        s.actions
            .iter()
            .find(|a| need.actions.iter().any(|n| wildcards_intersect(a, n, true)))
            .cloned()?
    } else if need
        .actions
        .iter()
        .any(|n| !s.not_actions.iter().any(|x| excludes(x, n)))
    {
        "not_actions".to_owned()
    } else {
        return None;
    };
    let every_resource = !s.not_resources.is_empty();
    let reached = |r: &str| match need.reach {
        Reach::AnyResource => true,
        // `\u{1}` is in no ARN: only a wildcard at the name's first character can stand for it.
        Reach::Unpinned(prefix) => could_be(r, &format!("{prefix}\u{1}*")),
        Reach::Wildcarded(prefix) => r.contains(['*', '?']) && could_be(r, &format!("{prefix}*")),
        Reach::Matching(patterns) => patterns.iter().any(|p| could_be(r, p)),
    };
    match need.reach {
        Reach::AnyResource => Some((g.index, action, None)),
        _ if every_resource => Some((g.index, action, Some("not_resources (every other resource)".into()))),
        _ => g
            .resources
            .iter()
            .find(|r| reached(r))
            .map(|r| (g.index, action, Some(r.clone()))),
    }
}

/// Whether a NotAction pattern takes all of a catalogued action pattern away (conservatively:
/// only when it plainly covers it).
fn excludes(not_action: &str, catalogued: &str) -> bool {
    if catalogued.contains(['*', '?']) {
        let service = catalogued.split_once(':').map_or("", |(s, _)| s);
        not_action == "*"
            || not_action.eq_ignore_ascii_case(catalogued)
            || not_action.eq_ignore_ascii_case(&format!("{service}:*"))
    } else {
        wildcards_intersect(not_action, catalogued, true)
    }
}

/// Whether some string matches both IAM wildcard patterns (`*`: any run, `?`: one character).
/// Both sides may carry wildcards; a literal is a pattern with none.
pub fn wildcards_intersect(a: &str, b: &str, ignore_case: bool) -> bool {
    intersect(a, b, ignore_case, false)
}

/// Whether a set's resource pattern `a` could match a real resource that `arn` describes: `arn`'s
/// `*` stand for runs without `:`, as in a real ARN, whose partition, service, region and account
/// hold none (a qualified name is written out, `function:latch-*:*`). `a`'s own `*` may still
/// span colons, as IAM lets a `*` that ends an ARN segment do
/// (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_resource.html).
pub(crate) fn could_be(a: &str, arn: &str) -> bool {
    intersect(a, arn, false, true)
}

fn intersect(a: &str, b: &str, ignore_case: bool, b_stars_within_segment: bool) -> bool {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let (n, m) = (a.len(), b.len());
    let at = |i: usize, j: usize| i * (m + 1) + j;
    // reach[at(i, j)]: some string takes a[..i] and b[..j] together to this point.
    let mut reach = vec![false; (n + 1) * (m + 1)];
    reach[0] = true;
    let same =
        |x: char, y: char| x == y || x == '?' || y == '?' || (ignore_case && x.to_lowercase().eq(y.to_lowercase()));
    for i in 0..=n {
        for j in 0..=m {
            if !reach[at(i, j)] {
                continue;
            }
            let (x, y) = (a.get(i).copied(), b.get(j).copied());
            if x == Some('*') {
                reach[at(i + 1, j)] = true;
                if j < m {
                    reach[at(i, j + 1)] = true;
                }
            }
            if y == Some('*') {
                reach[at(i, j + 1)] = true;
                if i < n && !(b_stars_within_segment && x == Some(':')) {
                    reach[at(i + 1, j)] = true;
                }
            }
            if let (Some(x), Some(y)) = (x, y)
                && x != '*'
                && y != '*'
                && same(x, y)
            {
                reach[at(i + 1, j + 1)] = true;
            }
        }
    }
    reach[at(n, m)]
}

/// A glob as the policy file writes it (globset syntax) as an IAM wildcard pattern that admits at
/// least as much: classes become `?`, alternations `*`.
pub fn iam_wildcard_of_glob(glob: &str) -> String {
    if glob.contains('{') {
        return "*".to_owned();
    }
    let mut out = String::with_capacity(glob.len());
    let mut chars = glob.chars();
    while let Some(ch) = chars.next() {
        match ch {
            '*' => {
                if !out.ends_with('*') {
                    out.push('*');
                }
            }
            '[' => {
                for inner in chars.by_ref() {
                    if inner == ']' {
                        break;
                    }
                }
                out.push('?');
            }
            '\\' => {
                if let Some(escaped) = chars.next() {
                    out.push(escaped);
                }
            }
            other => out.push(other),
        }
    }
    out
}
