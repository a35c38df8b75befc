// Thin glue between Perl and the C++ engine: convert arguments, make one call,
// convert the result. C++ exceptions become Perl dies with the same text.
#include "backup/render.h"
#include "backup/compressor.h"
#include "backup/status_qmp.h"

#include "qmp/error.h"
#include "qmp/monitor.h"
#include "util/json.h"
#include "upstream/backup.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <exception>
#include <vector>
#include <string>

#define PERL_NO_GET_CONTEXT
#include "EXTERN.h"
#include "perl.h"
#include "XSUB.h"

// Runs one engine call. croak() longjmps, which must not cross a C++ frame
// that still owns objects: the message is copied out, every C++ local is gone
// by the time we croak, and the error text reaches Perl unchanged.
template <class Body> static SV *engine_call(pTHX_ Body &&body)
{
    SV *error = nullptr;
    SV *result = nullptr;
    try {
        result = body();
    } catch (const std::exception &e) {
        error = newSVpv(e.what(), 0);
    }
    if (error)
        croak_sv(sv_2mortal(error));
    return result;
}

static SV *new_string_sv(pTHX_ const std::string &text)
{
    return newSVpvn(text.data(), text.size());
}

// An undef or zero precision asks for the default; a hash carries it as
// { precision => n } (PVE::Format accepts both forms).
static int precision_arg(pTHX_ SV *arg)
{
    if (SvROK(arg) && SvTYPE(SvRV(arg)) == SVt_PVHV) {
        SV **value = hv_fetchs((HV *)SvRV(arg), "precision", 0);
        arg = value ? *value : &PL_sv_undef;
    }
    if (!SvOK(arg))
        return 0;
    IV precision = SvIV(arg);
    if (precision < 0 || precision > 1000)
        croak("render_bytes: precision %" IVdf " out of range\n", precision);
    return static_cast<int>(precision);
}

// --- status loop and compressor (backup/) ---

// Calls a Perl code ref from inside an engine call. A die in it becomes a C++
// exception carrying the same text, so croak never crosses C++ frames.
static void call_perl_hook(pTHX_ SV *code, const std::string *argument)
{
    dSP;
    ENTER;
    SAVETMPS;
    PUSHMARK(SP);
    if (argument)
        XPUSHs(sv_2mortal(newSVpvn(argument->data(), argument->size())));
    PUTBACK;
    call_sv(code, G_DISCARD | G_EVAL);
    std::string error;
    if (SvTRUE(ERRSV))
        error = SvPV_nolen(ERRSV);
    FREETMPS;
    LEAVE;
    if (!error.empty())
        throw std::runtime_error(error);
}

// Like engine_call, for calls that wait on signals: a pending signal is
// dispatched to its Perl handler before any error is raised, as Perl would
// have run the handler at its next statement. A handler that dies (the
// plugin's does) replaces the error; otherwise the error stands, and an
// interrupted wait dies "interrupted by signal\n".
template <class Body> static SV *engine_call_interruptible(pTHX_ Body &&body)
{
    SV *error = nullptr;
    SV *result = nullptr;
    try {
        result = body();
    } catch (const std::exception &e) { // Interrupted included
        error = newSVpv(e.what(), 0);
    }
    if (error) {
        sv_2mortal(error);
        PERL_ASYNC_CHECK();
        croak_sv(error);
    }
    return result;
}

static int64_t hash_integer(pTHX_ HV *hash, const char *key)
{
    SV **value = hv_fetch(hash, key, strlen(key), 0);
    return value && SvOK(*value) ? static_cast<int64_t>(SvIV(*value)) : 0;
}

static std::string hash_string(pTHX_ HV *hash, const char *key)
{
    SV **value = hv_fetch(hash, key, strlen(key), 0);
    if (!value || !SvOK(*value))
        return "";
    STRLEN length;
    const char *text = SvPV(*value, length);
    return std::string(text, length);
}

// --- QMP and guest agent (qmp/) ---

// Perl data to JSON as PVE's to_json (JSON::XS) encodes it, which decides
// QMP's strict typing: a scalar last used as a string is a string, else a
// number (integral floats as integers, as JSON::XS prints them); booleans
// are JSON::PP::Boolean (also JSON::XS and Types::Serialiser ones) or \0/\1.
static engine::Json perl_to_json(pTHX_ SV *sv)
{
    if (SvROK(sv)) {
        SV *target = SvRV(sv);
        if (sv_isobject(sv) && (sv_derived_from(sv, "JSON::PP::Boolean") || sv_derived_from(sv, "JSON::XS::Boolean") ||
                                sv_derived_from(sv, "Types::Serialiser::Boolean")))
            return engine::Json::boolean(SvTRUE(target));
        if (SvTYPE(target) == SVt_PVHV) {
            HV *hash = (HV *)target;
            engine::Json object = engine::Json::object();
            hv_iterinit(hash);
            while (HE *entry = hv_iternext(hash)) {
                I32 length;
                const char *key = hv_iterkey(entry, &length);
                object.set(std::string(key, length).c_str(), perl_to_json(aTHX_ hv_iterval(hash, entry)));
            }
            return object;
        }
        if (SvTYPE(target) == SVt_PVAV) {
            AV *list = (AV *)target;
            engine::Json array = engine::Json::array();
            for (SSize_t i = 0; i <= av_len(list); i++) {
                SV **item = av_fetch(list, i, 0);
                array.append(item ? perl_to_json(aTHX_ *item) : engine::Json());
            }
            return array;
        }
        if (SvTYPE(target) < SVt_PVAV && SvOK(target) && !SvROK(target)) {
            STRLEN length;
            const char *text = SvPV(target, length);
            if (length == 1 && (text[0] == '0' || text[0] == '1'))
                return engine::Json::boolean(text[0] == '1');
        }
        throw std::runtime_error("cannot encode reference " + std::string(SvPV_nolen(sv)) + " as JSON\n");
    }
    if (SvPOKp(sv)) {
        STRLEN length;
        const char *text = SvPV(sv, length);
        return engine::Json::string(std::string_view(text, length));
    }
    if (SvNOKp(sv)) {
        NV value = SvNV(sv);
        if (value == static_cast<NV>(static_cast<int64_t>(value)) && value > -9.2e18 && value < 9.2e18)
            return engine::Json::integer(static_cast<int64_t>(value));
        return engine::Json::number(value);
    }
    if (SvIOKp(sv))
        return engine::Json::integer(static_cast<int64_t>(SvIV(sv)));
    if (!SvOK(sv))
        return engine::Json();
    STRLEN length;
    const char *text = SvPV(sv, length);
    return engine::Json::string(std::string_view(text, length));
}

// JSON to Perl data as PVE's from_json on the socket's bytes gives it:
// strings are the raw bytes (no UTF-8 flag), booleans JSON::PP::Boolean.
static SV *json_to_perl(pTHX_ const engine::Json &value)
{
    switch (value.type()) {
    case json_type_null:
        return newSV(0);
    case json_type_boolean: {
        SV *boolean = get_sv(value.as_boolean() ? "JSON::PP::true" : "JSON::PP::false", 0);
        return boolean && SvOK(boolean) ? newSVsv(boolean) : newSViv(value.as_boolean() ? 1 : 0);
    }
    case json_type_int:
        return newSViv(static_cast<IV>(value.as_integer()));
    case json_type_double:
        return newSVnv(value.as_number());
    case json_type_string:
        return new_string_sv(aTHX_ value.as_string());
    case json_type_array: {
        AV *list = newAV();
        for (size_t i = 0; i < value.size(); i++)
            av_push(list, json_to_perl(aTHX_ value.at(i)));
        return newRV_noinc((SV *)list);
    }
    case json_type_object: {
        HV *hash = newHV();
        json_object_object_foreach(value.get(), key, member)
        {
            (void)hv_store(hash, key, strlen(key), json_to_perl(aTHX_ engine::Json::borrow(member)), 0);
        }
        return newRV_noinc((SV *)hash);
    }
    }
    return newSV(0);
}

// Arguments: undef means none; anything but a hash is a caller bug.
static engine::Json qmp_arguments(pTHX_ SV *arguments)
{
    if (!SvOK(arguments))
        return engine::Json::object();
    if (!SvROK(arguments) || SvTYPE(SvRV(arguments)) != SVt_PVHV)
        throw std::runtime_error("QMP arguments must be a hash reference\n");
    return perl_to_json(aTHX_ arguments);
}

// Seconds (fractions allowed); undef or 0 asks for PVE's default.
static std::chrono::milliseconds qmp_timeout(pTHX_ SV *timeout)
{
    if (!SvOK(timeout) || SvNV(timeout) <= 0)
        return std::chrono::milliseconds(0);
    return std::chrono::milliseconds(static_cast<int64_t>(std::ceil(SvNV(timeout) * 1000)));
}

static std::string sv_text(pTHX_ SV *sv)
{
    STRLEN length;
    const char *text = SvPV(sv, length);
    return std::string(text, length);
}

// A file descriptor number, or a Perl file handle.
static int qmp_fd(pTHX_ SV *fd)
{
    if (!SvOK(fd))
        return -1;
    if (SvROK(fd) || isGV_with_GP(fd)) {
        IO *io = sv_2io(fd);
        return io && IoIFP(io) ? PerlIO_fileno(IoIFP(io)) : -1;
    }
    return static_cast<int>(SvIV(fd));
}

static engine::qmp::BatchCommand batch_command(pTHX_ SV *entry, SV *vmid);

// Calls a qmp_batch callback as $callback->($vmid, $return, $queue); the
// commands it pushes onto @$queue are queued next. They are copied out before
// the call's temporaries go and live until qmp_batch returns. A die in it
// becomes a C++ exception with the same text.
static std::vector<engine::qmp::BatchCommand> call_batch_callback(pTHX_ SV *code, SV *vmid, const engine::Json &result)
{
    std::vector<SV *> pushed;
    std::string error;
    {
        dSP;
        ENTER;
        SAVETMPS;
        AV *queue = (AV *)sv_2mortal((SV *)newAV());
        PUSHMARK(SP);
        XPUSHs(vmid);
        XPUSHs(sv_2mortal(json_to_perl(aTHX_ result)));
        XPUSHs(sv_2mortal(newRV_inc((SV *)queue)));
        PUTBACK;
        call_sv(code, G_DISCARD | G_EVAL);
        if (SvTRUE(ERRSV))
            error = SvPV_nolen(ERRSV);
        for (SSize_t i = 0; i <= av_len(queue); i++) {
            SV **entry = av_fetch(queue, i, 0);
            pushed.push_back(entry ? newSVsv(*entry) : newSV(0));
        }
        FREETMPS;
        LEAVE;
    }
    for (SV *entry : pushed)
        sv_2mortal(entry);
    if (!error.empty())
        throw std::runtime_error(error);
    std::vector<engine::qmp::BatchCommand> commands;
    for (SV *entry : pushed)
        commands.push_back(batch_command(aTHX_ entry, vmid));
    return commands;
}

// One [$execute, \%arguments, $callback] of qmp_batch; the callback is
// optional. The entry must stay alive while the batch runs.
static engine::qmp::BatchCommand batch_command(pTHX_ SV *entry, SV *vmid)
{
    if (!SvROK(entry) || SvTYPE(SvRV(entry)) != SVt_PVAV)
        throw std::runtime_error("qmp_batch: each command must be [$execute, \\%arguments, $callback]\n");
    AV *fields = (AV *)SvRV(entry);
    SV **name = av_fetch(fields, 0, 0);
    SV **arguments = av_fetch(fields, 1, 0);
    SV **callback = av_fetch(fields, 2, 0);
    if (!name || !SvOK(*name))
        throw std::runtime_error("qmp_batch: command without a name\n");
    engine::qmp::BatchCommand command{sv_text(aTHX_ *name), qmp_arguments(aTHX_ arguments ? *arguments : &PL_sv_undef)};
    if (callback && SvOK(*callback)) {
        if (!SvROK(*callback) || SvTYPE(SvRV(*callback)) != SVt_PVCV)
            throw std::runtime_error("qmp_batch: a callback must be a code reference\n");
        SV *code = *callback;
        command.on_reply = [=](const engine::Json &result) { return call_batch_callback(aTHX_ code, vmid, result); };
    }
    return command;
}

// --- backup on stock QEMU (upstream/) ---

// Calls a Perl code ref that answers yes or no (the plugin's qga_fs_freeze);
// a die becomes a C++ exception with the same text, as in call_perl_hook.
static bool call_perl_predicate(pTHX_ SV *code)
{
    dSP;
    ENTER;
    SAVETMPS;
    PUSHMARK(SP);
    PUTBACK;
    int count = call_sv(code, G_SCALAR | G_EVAL);
    SPAGAIN;
    bool answer = count == 1 && SvTRUE(POPs);
    PUTBACK;
    std::string error;
    if (SvTRUE(ERRSV))
        error = SvPV_nolen(ERRSV);
    FREETMPS;
    LEAVE;
    if (!error.empty())
        throw std::runtime_error(error);
    return answer;
}

static SV *hash_code(pTHX_ HV *hash, const char *key)
{
    SV **value = hv_fetch(hash, key, strlen(key), 0);
    if (!value || !SvROK(*value) || SvTYPE(SvRV(*value)) != SVt_PVCV)
        throw std::runtime_error(std::string("upstream_backup: hook '") + key + "' must be a code reference\n");
    return *value;
}

static AV *hash_array(pTHX_ HV *hash, const char *key)
{
    SV **value = hv_fetch(hash, key, strlen(key), 0);
    if (!value || !SvROK(*value) || SvTYPE(SvRV(*value)) != SVt_PVAV)
        throw std::runtime_error(std::string("upstream_backup: '") + key + "' must be an array reference\n");
    return (AV *)SvRV(*value);
}

static engine::upstream::BackupOptions upstream_backup_options(pTHX_ HV *args)
{
    engine::upstream::BackupOptions options;
    options.peer = {hash_string(aTHX_ args, "qmp_socket"), hash_string(aTHX_ args, "vmid")};
    options.work_dir = hash_string(aTHX_ args, "work_dir");
    options.output_fd = static_cast<int>(hash_integer(aTHX_ args, "output_fd"));
    options.bytes_per_second = static_cast<std::uint64_t>(hash_integer(aTHX_ args, "bytes_per_second"));
    AV *disks = hash_array(aTHX_ args, "disks");
    for (SSize_t i = 0; i <= av_len(disks); i++) {
        SV **disk = av_fetch(disks, i, 0);
        if (!disk || !SvROK(*disk) || SvTYPE(SvRV(*disk)) != SVt_PVHV)
            throw std::runtime_error("upstream_backup: each disk must be a hash reference\n");
        HV *hash = (HV *)SvRV(*disk);
        options.disks.push_back({hash_string(aTHX_ hash, "device"), hash_string(aTHX_ hash, "fleecing_path"),
                                 hash_string(aTHX_ hash, "fleecing_format")});
    }
    AV *configs = hash_array(aTHX_ args, "config_files");
    for (SSize_t i = 0; i <= av_len(configs); i++) {
        SV **path = av_fetch(configs, i, 0);
        if (path && SvOK(*path))
            options.config_files.push_back(SvPV_nolen(*path));
    }
    return options;
}

MODULE = PVE::VZDump::QemuServer::Engine        PACKAGE = PVE::VZDump::QemuServer::Engine

PROTOTYPES: DISABLE

SV *
version()
    CODE:
        RETVAL = newSVpvs(ENGINE_VERSION);
    OUTPUT:
        RETVAL

SV *
render_bytes(value, precision = &PL_sv_undef)
        NV value
        SV *precision
    CODE:
        int digits = precision_arg(aTHX_ precision);
        RETVAL = engine_call(aTHX_ [&] { return new_string_sv(aTHX_ engine::render_bytes(value, digits)); });
    OUTPUT:
        RETVAL

SV *
render_duration(seconds = &PL_sv_undef, auto_limit = false)
        SV *seconds
        bool auto_limit
    CODE:
        NV value = SvOK(seconds) ? SvNV(seconds) : 0;
        RETVAL = engine_call(aTHX_ [&] { return new_string_sv(aTHX_ engine::render_duration(value, auto_limit)); });
    OUTPUT:
        RETVAL

SV *
bitmap_status_text(info)
        HV *info
    CODE:
        engine::backup::BitmapInfo bitmap{hash_string(aTHX_ info, "drive"), hash_string(aTHX_ info, "action"),
                                          hash_integer(aTHX_ info, "size"), hash_integer(aTHX_ info, "dirty")};
        RETVAL = engine_call(aTHX_ [&] { return new_string_sv(aTHX_ engine::backup::bitmap_status_text(bitmap)); });
    OUTPUT:
        RETVAL

void
start_compressor(command, output_fd)
        const char *command
        int output_fd
    PPCODE:
        engine::backup::CompressorPipe pipe{-1, -1};
        engine_call(aTHX_ [&]() -> SV * {
            pipe = engine::backup::start_compressor(command, output_fd);
            return nullptr;
        });
        EXTEND(SP, 2);
        mPUSHi(pipe.pid);
        mPUSHi(pipe.write_fd);

SV *
backup_status_loop(qmp_socket, vmid, job_uuid, has_query_bitmap, is_template, before_command, log)
        const char *qmp_socket
        const char *vmid
        const char *job_uuid
        bool has_query_bitmap
        bool is_template
        SV *before_command
        SV *log
    CODE:
        RETVAL = engine_call_interruptible(aTHX_ [&] {
            engine::backup::StatusLoopOptions options;
            options.job_uuid = job_uuid;
            options.has_query_bitmap = has_query_bitmap;
            options.is_template = is_template;
            engine::backup::QmpStatusLoopHooks hooks;
            hooks.before_command = [&] { call_perl_hook(aTHX_ before_command, nullptr); };
            hooks.log = [&](const std::string &line) { call_perl_hook(aTHX_ log, &line); };
            hooks.interrupted = [&] { return PL_sig_pending != 0; };
            engine::backup::StatusLoopResult result =
                engine::backup::run_status_loop_over_qmp({qmp_socket, vmid}, options, hooks);
            HV *stat = newHV();
            hv_stores(stat, "total", newSViv(result.total));
            hv_stores(stat, "reused", newSViv(result.reused));
            return newRV_noinc((SV *)stat);
        });
    OUTPUT:
        RETVAL

SV *
qmp_cmd(socket, vmid, execute, arguments = &PL_sv_undef, timeout = &PL_sv_undef)
        SV *socket
        SV *vmid
        SV *execute
        SV *arguments
        SV *timeout
    CODE:
        RETVAL = engine_call(aTHX_ [&] {
            engine::Json reply = engine::qmp::command({sv_text(aTHX_ socket), sv_text(aTHX_ vmid)},
                                                      sv_text(aTHX_ execute), qmp_arguments(aTHX_ arguments),
                                                      qmp_timeout(aTHX_ timeout));
            return json_to_perl(aTHX_ reply);
        });
    OUTPUT:
        RETVAL

SV *
hmp_cmd(socket, vmid, command_line, timeout = &PL_sv_undef)
        SV *socket
        SV *vmid
        SV *command_line
        SV *timeout
    CODE:
        RETVAL = engine_call(aTHX_ [&] {
            return new_string_sv(aTHX_ engine::qmp::human_monitor_command(
                {sv_text(aTHX_ socket), sv_text(aTHX_ vmid)}, sv_text(aTHX_ command_line), qmp_timeout(aTHX_ timeout)));
        });
    OUTPUT:
        RETVAL

SV *
qmp_batch(socket, vmid, commands, fd = &PL_sv_undef, timeout = &PL_sv_undef)
        SV *socket
        SV *vmid
        AV *commands
        SV *fd
        SV *timeout
    CODE:
        // as engine_call, but a connect failure is also warned first, as
        // PVE::QMPClient::queue_execute does
        SV *error = nullptr;
        bool connect_failed = false;
        try {
            std::vector<engine::qmp::BatchCommand> queue;
            for (SSize_t i = 0; i <= av_len(commands); i++) {
                SV **entry = av_fetch(commands, i, 0);
                queue.push_back(batch_command(aTHX_ entry ? *entry : &PL_sv_undef, vmid));
            }
            std::vector<engine::Json> results = engine::qmp::batch(
                {sv_text(aTHX_ socket), sv_text(aTHX_ vmid)}, queue, qmp_fd(aTHX_ fd), qmp_timeout(aTHX_ timeout));
            AV *list = newAV();
            for (const engine::Json &result : results)
                av_push(list, json_to_perl(aTHX_ result));
            RETVAL = newRV_noinc((SV *)list);
        } catch (const engine::qmp::Error &e) {
            error = newSVpv(e.what(), 0);
            connect_failed = e.kind() == engine::qmp::Error::Kind::connect;
        } catch (const std::exception &e) {
            error = newSVpv(e.what(), 0);
        }
        if (error) {
            sv_2mortal(error);
            if (connect_failed)
                warn_sv(error);
            croak_sv(error);
        }
    OUTPUT:
        RETVAL

SV *
qga_cmd(agent_socket, vmid, execute, arguments = &PL_sv_undef, timeout = &PL_sv_undef)
        SV *agent_socket
        SV *vmid
        SV *execute
        SV *arguments
        SV *timeout
    CODE:
        RETVAL = engine_call(aTHX_ [&] {
            engine::Json reply = engine::qmp::agent_command({sv_text(aTHX_ agent_socket), sv_text(aTHX_ vmid)},
                                                            sv_text(aTHX_ execute), qmp_arguments(aTHX_ arguments),
                                                            qmp_timeout(aTHX_ timeout));
            return json_to_perl(aTHX_ reply);
        });
    OUTPUT:
        RETVAL

SV *
upstream_backup(args, hooks)
        HV *args
        HV *hooks
    CODE:
        RETVAL = engine_call_interruptible(aTHX_ [&] {
            engine::upstream::BackupOptions options = upstream_backup_options(aTHX_ args);
            SV *log = hash_code(aTHX_ hooks, "log");
            SV *freeze = hash_code(aTHX_ hooks, "freeze");
            SV *thaw = hash_code(aTHX_ hooks, "thaw");
            SV *started = hash_code(aTHX_ hooks, "started");
            engine::upstream::BackupHooks backup_hooks;
            backup_hooks.log = [&](const std::string &line) { call_perl_hook(aTHX_ log, &line); };
            backup_hooks.freeze = [&] { return call_perl_predicate(aTHX_ freeze); };
            backup_hooks.thaw = [&] { call_perl_hook(aTHX_ thaw, nullptr); };
            backup_hooks.started = [&](const std::string &uuid) { call_perl_hook(aTHX_ started, &uuid); };
            backup_hooks.interrupted = [&] { return PL_sig_pending != 0; };
            engine::upstream::BackupResult result;
            try {
                result = engine::upstream::run_backup(options, backup_hooks);
            } catch (const engine::backup::Interrupted &) {
                throw;
            } catch (const std::exception &e) {
                // a user-facing die: with the newline Perl adds no "at ... line"
                std::string text = e.what();
                if (text.empty() || text.back() != '\n')
                    throw std::runtime_error(text + "\n");
                throw;
            }
            HV *stat = newHV();
            hv_stores(stat, "total", newSVuv(result.total));
            hv_stores(stat, "zero_bytes", newSVuv(result.zero_bytes));
            hv_stores(stat, "bytes_read", newSVuv(result.bytes_read));
            return newRV_noinc((SV *)stat);
        });
    OUTPUT:
        RETVAL
