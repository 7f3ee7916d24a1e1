#!/bin/sh
# Mirrors the behaviour of the official redis image's entrypoint.
set -e

# first arg is `-f` or `--some-option`, or ends with .conf
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
	set -- redis-server "$@"
fi

# allow the container to be started with `--user`
if [ "$1" = 'redis-server' ] && [ "$(id -u)" = '0' ]; then
	find . \! -user redis -exec chown redis '{}' +
	exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi

um="$(umask)"
if [ "$um" = '0022' ]; then
	umask 0077
fi

if [ "$1" = 'redis-server' ]; then
	doProtectedMode=1
	if [ -f "${2:-}" ] && grep -q '^protected-mode' "$2"; then
		doProtectedMode=
	fi
	for arg; do
		case "$arg" in
			--protected-mode) doProtectedMode=; break ;;
		esac
	done
	if [ -n "$doProtectedMode" ]; then
		set -- "$@" --protected-mode no
	fi
fi

exec "$@"
