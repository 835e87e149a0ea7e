use taskq_runtime::task;

#[task]
async fn send_email(to: String) -> Result<(), String> {  //~ mistake
    if to.is_empty() {
        return Err("no recipient".to_string());
    }
    Ok(())
}

fn main() {}
