from fanflow import flow

wf = flow('t')


@wf.step()
def one() -> int:
    return 1

exit(3)
# expect: "exited while being imported (sys.exit(3))"
# line: -
