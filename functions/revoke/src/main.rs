use lambda_runtime::{Error, run, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    latch_aws::telemetry::init();
    let function = revoke::init().await.expect("revoke function configuration");
    run(service_fn(|event| function.handle(event))).await
}
