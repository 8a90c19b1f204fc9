"""``python -m numbagrad``: the autograd walkthrough, run on numbagrad.

``python -m numbagrad --info`` prints what numbagrad runs on (versions, threading layer);
``python -m numbagrad compile [--jobs N]`` compiles every kernel ahead of time.
"""
import sys


def _main(argv):
    if argv[:1] == ["--info"]:
        from .threading_layer import info
        rows = info()
        width = max(len(label) for label, _ in rows)
        for label, value in rows:
            print(f"{label:<{width}}  {value}")
        return 0
    if argv[:1] == ["compile"] and (len(argv) == 1 or (
            len(argv) == 3 and argv[1] == "--jobs" and argv[2].isdigit())):
        from .precompile import main
        return main(int(argv[2]) if len(argv) == 3 else None)
    if argv:
        print("usage: python -m numbagrad [--info | compile [--jobs N]]", file=sys.stderr)
        return 2
    from .walkthrough import main
    main()
    return 0


sys.exit(_main(sys.argv[1:]))
