//! A module whose own `Result`, `Box`, `Option`, `Vec`, `String`, `Queue`, `Duration`, ...
//! must not break the expansion; nor may relative `self::`/`super::` paths in argument
//! types, raw identifiers, or arguments named `queue` and `filter`.
#![deny(warnings)]
#![allow(dead_code, non_camel_case_types)]

mod app {
    pub mod types {
        #[derive(serde::Serialize, serde::Deserialize)]
        pub struct Email(pub std::string::String);
    }

    pub mod jobs {
        use taskq_runtime::TaskError;

        pub struct Result;
        pub struct Box;
        pub struct Option;
        pub struct Vec;
        pub struct String;
        pub struct Queue;
        pub struct Duration;
        pub struct TaskDef;
        pub struct Some;
        pub struct Ok;
        pub struct None;
        pub mod core {}
        pub mod std {}
        pub mod serde_json {}
        pub fn plain_future() {}
        pub const NAME: u8 = 0;
        pub struct start;
        pub struct builder;

        #[derive(::serde::Serialize, ::serde::Deserialize)]
        pub struct Local(pub u32);

        #[taskq_runtime::task]
        pub async fn send(
            to: super::types::Email,
            local: self::Local,
            r#type: ::std::string::String,
            queue: ::std::string::String,
            filter: ::std::option::Option<u32>,
        ) -> ::core::result::Result<(), TaskError> {
            let _ = (to, local, r#type, queue, filter);
            ::core::result::Result::Ok(())
        }

        pub async fn demo(q: &taskq_runtime::Queue) {
            let _ = send::start(
                q,
                super::types::Email("a@b".into()),
                Local(1),
                "t".into(),
                "q".into(),
                ::core::option::Option::None,
            )
            .await;
        }
    }
}

fn main() {}
