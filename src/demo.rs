//! placeholder
#[derive(clap::Args, Debug)]
pub struct DemoArgs {}
pub fn main(_a: DemoArgs) -> std::process::ExitCode {
    std::process::ExitCode::SUCCESS
}
