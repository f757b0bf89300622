'use strict';
// Loaded last in ZoneMTA's main process by the test fixture. Main-context
// plugins load only after the queue is up and every sending zone is spawned,
// and one after another, so when this init runs ZoneMTA is fully started
// (e.g. the email-bounce plugin is listening). It registers no hooks.
const fs = require('fs');

module.exports.title = 'otel-mta stack ready marker';

module.exports.init = (app, done) => {
    fs.writeFileSync(app.config.readyFile, String(process.pid));
    done();
};
