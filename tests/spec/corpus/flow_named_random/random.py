from fanflow import flow

wf = flow('t')


@wf.step()
def one() -> int:
    return 1
# expect: "the module name 'random' is also the name of a module of Python's standard library"
# line: 1
