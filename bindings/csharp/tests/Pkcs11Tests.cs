// A key on a PKCS#11 token (SoftHSM2, made here in a temporary folder): the binding's
// SetClientPkcs11 finds the key and certificate, the token signs the probe, and bad input
// throws with its own result.
using System;
using System.Diagnostics;
using System.IO;

namespace Tether.Tests
{
    public static class Pkcs11Tests
    {
        const string Module = "/usr/lib/softhsm/libsofthsm2.so";

        static void Run(string dir, string program, string arguments)
        {
            ProcessStartInfo info = new ProcessStartInfo(program, arguments);
            info.UseShellExecute = false;
            info.WorkingDirectory = dir;
            info.RedirectStandardOutput = true;
            info.RedirectStandardError = true;
            using (Process p = Process.Start(info))
            {
                string output = p.StandardOutput.ReadToEnd() + p.StandardError.ReadToEnd();
                Assert.True(p.WaitForExit(30000), program + " did not finish");
                Assert.Equal(0, p.ExitCode, program + " " + arguments + " (" + output.Trim() + ")");
            }
        }

        [Test]
        public static void KeyOnASoftHsmTokenIsUsedAndBadInputIsNamed()
        {
            Hub.Require("softhsm2-util", "softhsm2");
            Hub.Require("pkcs11-tool", "opensc");
            Hub.Require("openssl", "openssl");
            string dir = Path.Combine(Path.GetTempPath(), "tether-cs-pkcs11-" + Guid.NewGuid().ToString("N"));
            Directory.CreateDirectory(Path.Combine(dir, "tokens"));
            string conf = Path.Combine(dir, "softhsm2.conf");
            File.WriteAllText(conf, "directories.tokendir = " + Path.Combine(dir, "tokens") + "\nobjectstore.backend = file\n");
            // Read by the module when it is first loaded (once per process): set it before.
            Environment.SetEnvironmentVariable("SOFTHSM2_CONF", conf);
            Run(dir, "softhsm2-util", "--init-token --free --label cs --pin 1234 --so-pin 5678");
            Run(dir, "openssl", "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout k.pem -out c.pem -subj /CN=cs-device -days 2");
            Run(dir, "openssl", "pkcs8 -topk8 -nocrypt -in k.pem -out k.p8");
            Run(dir, "softhsm2-util", "--import k.p8 --token cs --label dev --id 01 --pin 1234");
            Run(dir, "openssl", "x509 -in c.pem -outform DER -out c.der");
            Run(dir, "pkcs11-tool", "--module " + Module + " --token-label cs --login --pin 1234 --write-object c.der --type cert --id 01 --label dev");
            const string uri = "pkcs11:token=cs;object=dev";
            using (TlsConfigBuilder builder = new TlsConfigBuilder())
            {
                using (TlsConfig tls = builder.SetClientPkcs11(Module, uri, "1234").Build())
                {
                    Assert.True(tls != null, "a configuration with the token's key");
                }
                TetherException e = Assert.Fails(Result.Pkcs11PinIncorrect, () => builder.SetClientPkcs11(Module, uri, "0000"), "wrong PIN");
                Assert.True(!e.Message.Contains("0000"), "the PIN is not in the message: " + e.Message);
                Assert.Fails(Result.Pkcs11ModuleNotFound, () => builder.SetClientPkcs11("/nonexistent/p11.so", uri, "1234"), "missing module");
                Assert.Fails(Result.Pkcs11TokenAbsent, () => builder.SetClientPkcs11(Module, "pkcs11:token=absent;object=dev", "1234"), "absent token");
                Assert.Fails(Result.Pkcs11KeyNotFound, () => builder.SetClientPkcs11(Module, "pkcs11:token=cs;object=nothing", "1234"), "no such key");
                Assert.Fails(Result.Pkcs11UriInvalid, () => builder.SetClientPkcs11(Module, "token=cs", "1234"), "not a URI");
            }
            Directory.Delete(dir, true);
        }
    }
}
