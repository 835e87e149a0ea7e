//! `crate = path` for a renamed runtime: nothing generated names `::taskq_runtime`.
#![deny(warnings)]

use taskq_runtime as tq;

#[tq::task(crate = tq, queue = "renamed")]
async fn renamed(ctx: tq::Context, n: u32) -> Result<(), tq::TaskError> {
    let _ = (ctx, n);
    Ok(())
}

mod nested {
    // A path from the crate root works from any module.
    #[taskq_runtime::task(crate = crate::tq)]
    pub(crate) async fn deeper(n: u32) -> Result<(), crate::tq::TaskError> {
        let _ = n;
        Ok(())
    }
}

async fn demo(queue: &tq::Queue) -> Result<(), tq::StartError> {
    renamed::start(queue, 1).await?;
    nested::deeper::start(queue, 2).await?;
    Ok(())
}

fn main() {
    let _ = demo;
}
