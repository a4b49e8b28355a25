use lambda_runtime::{Error, run, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    latch_aws::telemetry::init();
    let function = sweep::init()
        .await
        .expect("sweep function configuration and policy file");
    run(service_fn(|event| function.handle(event))).await
}
