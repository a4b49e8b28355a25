// The grant path's future (handler → service → adapters → the SDK, with the adapters' conflict
// retries around the SDK calls) is deeper than rustc's default layout query limit of 128.
#![recursion_limit = "256"]

use lambda_runtime::{Error, run, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    latch_aws::telemetry::init();
    let service = grant::init()
        .await
        .expect("grant function configuration and policy file");
    run(service_fn(|event| grant::invoke(&service, event))).await
}
