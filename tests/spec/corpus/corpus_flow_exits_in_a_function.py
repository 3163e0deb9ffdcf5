import sys


def stop():
    sys.exit(0)


stop()
from fanflow import flow

wf = flow('t')


@wf.step()
def one() -> int:
    return 1
# expect: "exited while being imported"
# line: 5
