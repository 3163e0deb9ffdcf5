def pick(options: list):
    return options[0]
