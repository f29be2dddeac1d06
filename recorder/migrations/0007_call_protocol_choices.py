"""Call.protocol takes its choices from CallProtocol: sip, sccp, lync, tapi and rtp (the
engine's unsignalled calls). Choices live in Python only: the column does not change."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('recorder', '0006_audit_append_only_everywhere'),
    ]

    operations = [
        migrations.AlterField(
            model_name='call',
            name='protocol',
            field=models.CharField(choices=[('sip', 'SIP'), ('sccp', 'Cisco SCCP'), ('lync', 'Lync / Skype for Business'), ('tapi', 'ShoreTel TAPI'), ('rtp', 'RTP without signalling')], help_text='The call system the call was followed through; rtp for RTP of a known phone without signalling.', max_length=8),
        ),
    ]
