use taskq_runtime::{task, Context, TaskError};

struct Invoice {
    id: u64,
}

#[task]
async fn bill(ctx: Context, invoice: Invoice, note: String) -> Result<(), TaskError> {  //~ mistake
    let _ = (ctx, invoice.id, note);
    Ok(())
}

fn main() {}
