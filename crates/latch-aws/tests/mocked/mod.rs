//! Clients whose calls aws-smithy-mocks' rules answer, built without the SDK crates' `test-util`
//! feature (which `aws_smithy_mocks::mock_client!` needs for `with_test_defaults_v2`): a
//! feature a dev-dependency turns on in an SDK crate makes `cargo build -p latch-cli` rebuild
//! that crate beside the workspace's test build.
//!
//! What `mock_client!` sets that these tests rely on is set here: the mock HTTP client and the
//! rules' interceptor (a call no rule matches panics), a region, the latest behavior version,
//! static credentials. Not its fixed clock or test user agent: no assertion reads a signature
//! or a header. Retries are the SDK's defaults, as under `mock_client!`.

/// `mocked_client!(aws_sdk_iam, RuleMode::MatchAny, rules)`: a client of that SDK crate whose
/// every call is answered by `rules` (anything iterating over `&Rule`s) in that mode.
macro_rules! mocked_client {
    ($sdk:ident, $mode:expr, $rules:expr) => {{
        let mut interceptor = aws_smithy_mocks::MockResponseInterceptor::new().rule_mode($mode);
        for rule in $rules {
            interceptor = interceptor.with_rule(rule);
        }
        $sdk::Client::from_conf(
            $sdk::Config::builder()
                .behavior_version($sdk::config::BehaviorVersion::latest())
                .region($sdk::config::Region::new("us-east-1"))
                .credentials_provider($sdk::config::Credentials::new(
                    "ANOTREAL",
                    "notrealrnrELgWzOk3IfjzDKtFBhDby",
                    None,
                    None,
                    "mocked",
                ))
                .http_client(aws_smithy_mocks::create_mock_http_client())
                .interceptor(interceptor)
                .build(),
        )
    }};
}

pub(crate) use mocked_client;
