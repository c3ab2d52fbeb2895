//! The right interface name and version, the wrong types: `info` returns a
//! number and every lifecycle call takes nothing. Loading it must fail
//! before any export is called.

wit_bindgen::generate!({
    inline: r#"
        package bursar:plugin@0.1.0;

        interface processing {
            info: func() -> u32;
            check-connection: func() -> u32;
            catalog: func() -> u32;
            open: func() -> u32;
            suspend: func() -> u32;
            resume: func() -> u32;
            close: func() -> u32;
            prolong: func() -> u32;
            change-plan: func() -> u32;
            reinstall: func() -> u32;
            poll: func() -> u32;
        }

        world wrong {
            export processing;
        }
    "#,
});

struct Wrong;

impl exports::bursar::plugin::processing::Guest for Wrong {
    fn info() -> u32 {
        // A host that called this believing it returns a record would read
        // garbage; it must never be called.
        panic!("info was called on a component that failed its type check")
    }
    fn check_connection() -> u32 {
        0
    }
    fn catalog() -> u32 {
        0
    }
    fn open() -> u32 {
        0
    }
    fn suspend() -> u32 {
        0
    }
    fn resume() -> u32 {
        0
    }
    fn close() -> u32 {
        0
    }
    fn prolong() -> u32 {
        0
    }
    fn change_plan() -> u32 {
        0
    }
    fn reinstall() -> u32 {
        0
    }
    fn poll() -> u32 {
        0
    }
}

export!(Wrong);
