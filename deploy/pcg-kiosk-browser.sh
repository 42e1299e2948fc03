#!/bin/sh
# Full-screen Chromium on the kiosk app, started by the desktop session (pcg-kiosk-browser.desktop
# or the compositor's autostart). Waits for the server, then restarts the browser if it ever exits.
URL="${PCG_KIOSK_URL:-http://127.0.0.1:8080/}"
PROFILE="${XDG_CACHE_HOME:-$HOME/.cache}/pcg-kiosk-chromium"
BROWSER="$(command -v chromium-browser || command -v chromium)"

until python3 -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + 'api/state', timeout=2)" "$URL" 2>/dev/null; do
  sleep 1
done

while true; do
  # A crash or power cut leaves "Chromium didn't shut down correctly"; clear it so no bubble shows.
  sed -i 's/"exited_cleanly":false/"exited_cleanly":true/; s/"exit_type":"[^"]*"/"exit_type":"Normal"/' \
    "$PROFILE/Default/Preferences" 2>/dev/null
  "$BROWSER" --kiosk "$URL" \
    --user-data-dir="$PROFILE" \
    --noerrdialogs --disable-infobars --no-first-run --disable-session-crashed-bubble \
    --disable-features=Translate,TouchpadOverscrollHistoryNavigation --overscroll-history-navigation=0 \
    --disable-pinch --check-for-update-interval=31536000 --password-store=basic \
    --autoplay-policy=no-user-gesture-required
  sleep 2
done
