import sys

from fanflow import flow

wf = flow('t')


@wf.step()
def one() -> int:
    return 1

sys.exit(0)
# expect: "the workflow file exited while being imported (sys.exit(0))"
# line: 12
