from fanflow import flow

wf = flow('t')


@wf.step()
def one() -> int:
    return 1

raise SystemExit('bye')
# expect: "exited while being imported (sys.exit('bye'))"
# line: 10
