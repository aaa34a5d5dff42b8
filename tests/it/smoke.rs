//! The shortest end-to-end proof: start, run, stop.
use crate::common;

use dockexec::CodeBlock;

#[test]
fn hello_world() {
    let ex = common::start();
    let out = ex.run(&CodeBlock::python("print('hello world')")).unwrap();
    assert!(out.status.success(), "{}", out.status);
    assert_eq!(out.stdout, b"hello world\n");
    let id = ex.container_id().to_string();
    ex.stop().unwrap();
    assert!(!common::container_exists(&id));
}
