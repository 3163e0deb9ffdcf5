import sys

sys.exit(1)
from fanflow import flow

wf = flow('t')


@wf.step()
def one() -> int:
    return 1
# expect: "the workflow file exited while being imported (sys.exit(1))"
# line: 3
