from fanflow import flow

wf = flow('t')


@wf.step(with_={'secs': 1})
def one(seconds: float) -> int:
    return 1
# expect: "takes no argument 'secs' (did you mean 'seconds'?)"
# line: 6
