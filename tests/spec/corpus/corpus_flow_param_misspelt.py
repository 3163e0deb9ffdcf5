from fanflow import flow

wf = flow('t', params={'n': {'type': 'int', 'defualt': 3}})


@wf.step()
def one() -> int:
    return 1
# expect: "unknown key 'defualt' (did you mean 'default'?)"
# line: -
