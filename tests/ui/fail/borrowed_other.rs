use taskq_runtime::{task, TaskError};

#[derive(serde::Serialize, serde::Deserialize)]
struct Invoice {
    id: u64,
}

#[task]
async fn bill(invoice: &mut Invoice, lines: Vec<&str>) -> Result<(), TaskError> {  //~ mistakes: 2
    let _ = (invoice, lines);
    Ok(())
}

fn main() {}
