from fanflow import flow

wf = flow('t')


@wf.step()
def one() -> int:
    return 1
# expect: "rename statistics.py"
# line: 1
